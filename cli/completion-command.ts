/**
 * `clusterrunner completion bash|zsh` (issue 16): a completion script generated from the command line's
 * own definition, so it never lists a command or flag that does not exist. Install with
 * `source <(clusterrunner completion bash)` (or zsh) in the shell's rc file.
 */
import type { Command } from 'commander';
import { EXIT_SUCCESS, usageError } from './exit-codes.ts';

export const COMPLETION_SHELLS = ['bash', 'zsh'] as const;

interface CommandWords {
  readonly name: string;
  readonly description: string;
  readonly words: readonly string[];
}

function commandWords(program: Command): CommandWords[] {
  return program.commands.map((command) => ({
    name: command.name(),
    description: command.description(),
    words: [
      ...command.options.flatMap((option) => [option.short, option.long].filter((flag): flag is string => flag !== undefined)),
      ...command.commands.map((sub) => sub.name()),
      '--help',
    ],
  }));
}

/** Names and flags are ours (letters, digits, dashes); quoting is still applied so the script stays valid. */
function shellWord(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

export function completionScript(program: Command, shell: string): string {
  const commands = commandWords(program);
  const names = commands.map((command) => command.name).join(' ');
  if (shell === 'bash') {
    const cases = commands.map((command) => `    ${command.name}) words=${shellWord(command.words.join(' '))} ;;`).join('\n');
    return `# clusterrunner completion for bash: source <(clusterrunner completion bash)
_clusterrunner() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" words
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W ${shellWord(`${names} --help --version`)} -- "$cur"))
    return
  fi
  case "\${COMP_WORDS[1]}" in
${cases}
    *) words='' ;;
  esac
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -o default -F _clusterrunner clusterrunner
`;
  }
  if (shell === 'zsh') {
    const described = commands.map((command) => shellWord(`${command.name}:${command.description.replace(/:/g, ' ')}`)).join(' ');
    const cases = commands.map((command) => `    ${command.name}) compadd -- ${command.words.map(shellWord).join(' ')}; _files ;;`).join('\n');
    return `#compdef clusterrunner
# clusterrunner completion for zsh: source <(clusterrunner completion zsh)
_clusterrunner() {
  local -a commands
  commands=(${described})
  if (( CURRENT == 2 )); then
    _describe 'command' commands
    return
  fi
  case "\${words[2]}" in
${cases}
    *) _files ;;
  esac
}
if (( $+functions[compdef] )); then compdef _clusterrunner clusterrunner; fi
`;
  }
  throw usageError(`completion takes ${COMPLETION_SHELLS.join(' or ')}, not ${JSON.stringify(shell)}`);
}

export function runCompletionCommand(program: Command, shell: string): number {
  process.stdout.write(completionScript(program, shell));
  return EXIT_SUCCESS;
}
