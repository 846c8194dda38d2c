/**
 * A small long-lived process that starts commands on our behalf (issue 18). Node's spawn forks the whole
 * worker (page tables of a 100+ MB heap, then copy-on-write faults) and waits on its own thread until the
 * child has exec'd; the worker's thread here only writes one request. Two implementations of one protocol:
 * - Python (shared/spawner.py), preferred: os.posix_spawn is a vfork-style clone that copies no page tables
 *   and leaves no copy-on-write faults behind; on a VM with page-table isolation it costs a tenth of a fork.
 * - Perl (below), where there is no Python 3.8+: Debian's perl-base is essential. It forks, from a few MB.
 * Where neither runs, callers fall back to Node's spawn (spawnerAvailable()). CLUSTERRUNNER_SPAWNER=perl or
 * python picks one (for benches and tests).
 *
 * What a command gets is what spawnShell promises: its own process group (in the spawner's session, so that
 * the kernel's autogroups make one scheduling group per spawner rather than one per command), stdin from
 * /dev/null, stdout and stderr on two pipes read by the spawner and relayed here in frames, the environment
 * given (nothing else), the cwd, and run_as_user's uid/gid (supplementary groups dropped). The spawner reports
 * the pid, the output, each pipe's end and the exit status; pausing a command's output stops reading its
 * pipes, so a command whose reader cannot keep up blocks on its next write. Signals are sent from here.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Writable } from 'node:stream';

/*
 * Requests (here -> spawner): u32 length, then op (1 byte), u32 id, payload. S: cwd NUL uid NUL gid NUL
 * script (NUL env entry)*; P: pause; R: resume; D: drop (close its pipes, forget it).
 * Events (spawner -> here): op (1 byte), u32 id, u32 length, payload. P: pid (once it leads its process group); O/E: stdout/stderr bytes;
 * C: a pipe closed (payload 1 or 2); X: exit ("code signal escaped", code -1 when signalled, escaped as for
 * Q, looked at as the shell was reaped); F: not started (why).
 * Q (request, then event): may a process have escaped ("1"/"0"), see mayHaveEscaped().
 */
const SPAWNER_SCRIPT = String.raw`
use strict; use warnings; use POSIX (); use IO::Select ();
binmode STDIN; binmode STDOUT;
my (%kids, %by_pid, %owner);
my $sel = IO::Select->new(\*STDIN);
my $in = '';
# SIGCHLD wakes the loop through a pipe: a signal that lands while a turn is under way is not lost.
pipe(my $wake_r, my $wake_w) or die "pipe: $!";
my $flags = fcntl($wake_w, POSIX::F_GETFL(), 0);
fcntl($wake_w, POSIX::F_SETFL(), $flags | POSIX::O_NONBLOCK());
$sel->add($wake_r);
# Deferred (safe) delivery: a handler run at any instant, in the middle of malloc, corrupts perl's heap.
my $on_child = POSIX::SigAction->new(sub { syswrite($wake_w, 'x') });
$on_child->safe(1);
POSIX::sigaction(POSIX::SIGCHLD(), $on_child);
# A signal to the worker's whole group (Ctrl-C, a service manager's or a pool's stop) is the worker's to act on:
# it stops its commands through us, and we end when it closes our input. Dying here would fail every command
# while they run on, escaped, and a setup reported failed would be forgotten untorn-down (issue 15).
my @group_signals = qw(INT TERM HUP QUIT);
$SIG{$_} = 'IGNORE' for @group_signals;
# A child subreaper (prctl PR_SET_CHILD_SUBREAPER; the syscall number comes from the caller, it is per
# architecture): whatever a command leaves running when its shell exits becomes our child, so the caller can
# tell from our list of children that nothing escaped, without reading every process's environment.
my $prctl = $ARGV[0] // 0;
my $is_reaper = ($prctl > 0 && syscall($prctl, 36, 1, 0, 0, 0) == 0) ? 1 : 0;
# A session of our own, and each command a process group in it: one scheduling group for all of them (see
# spawner.py). Where we already lead a group, the commands still get groups of their own.
POSIX::setsid();
# command_nice, as in spawner.py: our own nice (inherited), and our session's autogroup, one write per 100 ms
# machine-wide. perl-base has no Time::HiRes: times() counts clock ticks.
my $nice = $ARGV[1] // 0;
POSIX::nice($nice) if $nice > 0;
my $tick = POSIX::sysconf(POSIX::_SC_CLK_TCK()) || 100;
sub now { return (POSIX::times())[0] / $tick; }
my $autogroup_at = $nice > 0 ? now() : undef;
my $give_up_at = now() + 30;
sub nice_autogroup {
  open(my $fh, '>', '/proc/self/autogroup') or return 1;
  my $again = !defined(syswrite($fh, $nice)) && $!{EAGAIN};
  close $fh;
  return !$again;
}
sub emit {
  my ($op, $id, $data) = @_;
  my $msg = pack('a1 N N', $op, $id, length $data) . $data;
  my $off = 0;
  while ($off < length $msg) {
    my $n = syswrite(STDOUT, $msg, length($msg) - $off, $off);
    if (!defined $n) { next if $!{EINTR}; POSIX::_exit(0); }
    $off += $n;
  }
}
sub start {
  my ($id, $payload) = @_;
  my ($cwd, $uid, $gid, $script, @env) = split /\0/, $payload, -1;
  if (!-d $cwd) { emit('F', $id, "the working directory $cwd does not exist"); return; }
  # The group pipe closes when the child leads its own process group: only then is its pid a group to signal.
  my ($or, $ow, $er, $ew, $sr, $sw);
  if (!(pipe($or, $ow) && pipe($er, $ew) && pipe($sr, $sw))) {
    emit('F', $id, "pipe: $!"); close $_ for grep { defined } ($or, $ow, $er, $ew, $sr, $sw); return;
  }
  my $pid = fork();
  if (!defined $pid) { emit('F', $id, "fork: $!"); close $_ for ($or, $ow, $er, $ew, $sr, $sw); return; }
  if ($pid == 0) {
    eval {
      POSIX::sigaction(POSIX::SIGCHLD(), POSIX::SigAction->new('DEFAULT'));
      # An ignored signal stays ignored across exec: the command gets the defaults back.
      $SIG{$_} = 'DEFAULT' for @group_signals;
      close $wake_r; close $wake_w;
      POSIX::setpgid(0, 0);
      close $sw;
      open(STDIN, '<', '/dev/null') or die "stdin: $!\n";
      POSIX::dup2(fileno($ow), 1) // die "dup2: $!\n";
      POSIX::dup2(fileno($ew), 2) // die "dup2: $!\n";
      if ($gid ne '') {
        $! = 0; $) = "$gid $gid"; die "setgroups: $!\n" if $!;
        POSIX::setgid($gid) or die "setgid: $!\n";
      }
      if ($uid ne '') { POSIX::setuid($uid) or die "setuid: $!\n"; }
      chdir($cwd) or die "the working directory $cwd: $!\n";
      %ENV = ();
      for (@env) { my $at = index($_, '='); $ENV{substr($_, 0, $at)} = substr($_, $at + 1) if $at > 0; }
      exec { '/bin/bash' } '/bin/bash', '-c', $script;
      die "exec /bin/bash: $!\n";
    };
    my $why = $@ || "unknown\n";
    syswrite(STDERR, "clusterrunner: could not start the command: $why");
    POSIX::_exit(127);
  }
  close $ow; close $ew; close $sw;
  $kids{$id} = { open => [$or, $er], paused => 0, pid => $pid, group => $sr };
  $by_pid{$pid} = $id;
  $owner{fileno $or} = [$id, 1, $or];
  $owner{fileno $er} = [$id, 2, $er];
  $owner{fileno $sr} = [$id, 0, $sr];
  $sel->add($or, $er, $sr);
}
sub group_ready {
  my ($id) = @_;
  my $kid = $kids{$id} or return;
  my $fh = delete $kid->{group} or return;
  delete $owner{fileno $fh};
  $sel->remove($fh);
  close $fh;
  emit('P', $id, $kid->{pid});
}
sub close_pipe {
  my ($fh) = @_;
  my $o = delete $owner{fileno $fh} or return;
  $sel->remove($fh);
  my $kid = $kids{$o->[0]};
  $kid->{open} = [grep { $_ != $fh } @{$kid->{open}}] if $kid;
  close $fh;
  return $o;
}
# "1" unless, as a subreaper, we know every child of ours is a command's shell: what a command leaves behind
# when its shell exits becomes our child, so any other child escaped from one (setsid, a double fork).
sub escaped {
  return 1 unless $is_reaper;
  open(my $fh, '<', "/proc/$$/task/$$/children") or return 1;
  my $children = <$fh> // '';
  close $fh;
  for (split ' ', $children) { return 1 unless exists $by_pid{$_}; }
  return 0;
}
sub request {
  my ($op, $id, $payload) = @_;
  if ($op eq 'S') { start($id, $payload); return; }
  if ($op eq 'Q') { reap(); emit('Q', $id, escaped()); return; }
  my $kid = $kids{$id} or return;
  if ($op eq 'P') { $kid->{paused} = 1; $sel->remove(@{$kid->{open}}); }
  elsif ($op eq 'R') { $kid->{paused} = 0; $sel->add(@{$kid->{open}}); }
  elsif ($op eq 'D') { group_ready($id); close_pipe($_) for @{$kid->{open}}; delete $kids{$id}; }
}
sub reap {
  while ((my $pid = waitpid(-1, POSIX::WNOHANG())) > 0) {
    my $status = $?;
    my $id = delete $by_pid{$pid};
    next unless defined $id;
    group_ready($id);
    my $sig = POSIX::WIFSIGNALED($status) ? POSIX::WTERMSIG($status) : 0;
    # Whatever the shell left behind is our child by now (reparented before its parent hears of the exit).
    emit('X', $id, ($sig ? "-1 $sig" : POSIX::WEXITSTATUS($status) . ' 0') . ' ' . escaped());
  }
}
for (;;) {
  if (defined $autogroup_at && now() >= $autogroup_at) {
    $autogroup_at = (nice_autogroup() || now() >= $give_up_at) ? undef : now() + 0.1;
  }
  reap();
  # The timeout covers a SIGCHLD that lands in the instant between the last check and the wait itself.
  for my $fh ($sel->can_read(%by_pid ? 0.05 : defined $autogroup_at ? 0.1 : undef)) {
    # A handle closed earlier in this turn (its command dropped) has no number any more.
    my $fd = fileno($fh);
    next unless defined $fd;
    if ($fh == $wake_r) { sysread($wake_r, my $drain, 4096); next; }
    if ($fd == 0) {
      my $n = sysread(STDIN, $in, 262144, length $in);
      next if !defined $n && $!{EINTR};
      POSIX::_exit(0) if !$n;
      while (length($in) >= 4) {
        my $len = unpack('N', $in);
        last if length($in) < 4 + $len;
        my ($op, $id) = unpack('a1 N', substr($in, 4, 5));
        request($op, $id, substr($in, 9, $len - 5));
        substr($in, 0, 4 + $len) = '';
      }
      next;
    }
    my $o = $owner{$fd} or next;
    next if $o->[2] != $fh;
    if ($o->[1] == 0) { group_ready($o->[0]); next; }
    my $n = sysread($fh, my $buf, 65536);
    next if !defined $n && ($!{EINTR} || $!{EAGAIN});
    if ($n) { emit($o->[1] == 1 ? 'O' : 'E', $o->[0], $buf); next; }
    close_pipe($fh);
    emit('C', $o->[0], $o->[1]);
  }
}
`;

export interface SpawnRequest {
  readonly cwd: string;
  readonly env: NodeJS.ProcessEnv;
  /** The bash -c script. */
  readonly script: string;
  readonly uid?: number;
  readonly gid?: number;
}

export interface SpawnEvents {
  onPid(pid: number): void;
  onData(stream: 1 | 2, chunk: Buffer): void;
  onClose(stream: 1 | 2): void;
  /** code is -1 when signal (a number) is not 0; mayHaveEscaped as mayHaveEscaped() said when it was reaped. */
  onExit(code: number, signal: number, mayHaveEscaped: boolean): void;
  /** The command never started (missing cwd, fork failure, the spawner gone). */
  onFail(message: string): void;
}

const PERL = '/usr/bin/perl';
const PYTHON = '/usr/bin/python3';
const PYTHON_SCRIPT = fileURLToPath(new URL('./spawner.py', import.meta.url));
/* prctl's number where we know it; elsewhere no subreaper, and mayHaveEscaped() always says yes. */
const PRCTL_SYSCALL: Partial<Record<string, number>> = { x64: 157, arm64: 167 };
/* A frame is at most one pipe read (64 KiB) plus its header; anything larger means the stream is corrupt. */
const MAX_EVENT_BYTES = 1024 * 1024;

export type SpawnerKind = 'python' | 'perl';

/** What each kind needs, checked by running it: posix_spawn with setpgroup (Python 3.8+), Perl's modules. */
const CHECKS: Record<SpawnerKind, [string, string[]]> = {
  python: [PYTHON, ['-I', '-S', '-c', 'import os, selectors, signal, struct; os.waitpid(os.posix_spawn("/bin/true", ["true"], {}, setpgroup=0, setsigdef=[signal.SIGPIPE]), 0)']],
  perl: [PERL, ['-MPOSIX', '-MIO::Select', '-e', '1']],
};

let available: SpawnerKind[] | undefined;

/** The kinds that run here, best first (checked once); CLUSTERRUNNER_SPAWNER narrows them to one, or none. */
export function availableSpawners(): readonly SpawnerKind[] {
  if (available === undefined) {
    const wanted = process.env['CLUSTERRUNNER_SPAWNER'];
    const kinds = (['python', 'perl'] as const).filter((kind) => wanted === undefined || wanted === '' || wanted === kind);
    available = kinds.filter((kind) => spawnSync(CHECKS[kind][0], CHECKS[kind][1], { stdio: 'ignore', timeout: 10_000 }).status === 0);
  }
  return available;
}

/** Whether a spawner can run here. */
export function spawnerAvailable(): boolean {
  return availableSpawners().length > 0;
}

export class Spawner {
  readonly kind: SpawnerKind;
  readonly #nice: number;
  #child: ChildProcess | null = null;
  #input: Writable | null = null;
  readonly #commands = new Map<number, SpawnEvents>();
  #nextId = 1;
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  readonly #queries = new Map<number, (mayHave: boolean) => void>();

  /**
   * `nice`: command_nice, how far below our CPU priority the commands run (0 to 19; 0, the default: the same).
   */
  constructor(kind: SpawnerKind = availableSpawners()[0] ?? 'perl', options: { readonly nice?: number } = {}) {
    this.kind = kind;
    const nice = options.nice ?? 0;
    if (!Number.isInteger(nice) || nice < 0 || nice > 19) throw new RangeError(`nice: expected an integer from 0 to 19, got ${nice}`);
    this.#nice = nice;
  }

  /**
   * False only when no process started through this spawner is alive outside a running command's shell
   * (the spawner is a subreaper: it inherits whatever a command left when its shell exited). True whenever
   * that is not known: no subreaper here, no /proc, the spawner gone.
   */
  mayHaveEscaped(): Promise<boolean> {
    const id = this.#takeId();
    return new Promise((resolve) => {
      this.#queries.set(id, resolve);
      this.#send('Q', id);
    });
  }

  #takeId(): number {
    const id = this.#nextId;
    this.#nextId = this.#nextId >= 0xffff_fff0 ? 1 : this.#nextId + 1;
    return id;
  }

  /** Starts a command; returns its id for pause/resume/drop. Events arrive on `events`. */
  spawn(request: SpawnRequest, events: SpawnEvents): number {
    const id = this.#takeId();
    const envEntries: string[] = [];
    for (const [name, value] of Object.entries(request.env)) {
      // A NUL cannot be in an environment (execve would cut it there); such a variable is not passable at all.
      if (value === undefined || name.includes('\0') || name.includes('=') || value.includes('\0')) continue;
      envEntries.push(`${name}=${value}`);
    }
    const fields = [request.cwd, request.uid === undefined ? '' : String(request.uid), request.gid === undefined ? '' : String(request.gid), request.script, ...envEntries];
    if (fields.slice(0, 4).some((field) => field.includes('\0'))) {
      queueMicrotask(() => events.onFail('the command or its working directory holds a NUL character'));
      return id;
    }
    this.#commands.set(id, events);
    this.#send('S', id, Buffer.from(fields.join('\0'), 'utf8'));
    return id;
  }

  pause(id: number): void {
    if (this.#commands.has(id)) this.#send('P', id);
  }

  resume(id: number): void {
    if (this.#commands.has(id)) this.#send('R', id);
  }

  /** Closes our side of the command's pipes; no more events for it. */
  drop(id: number): void {
    if (!this.#commands.delete(id)) return;
    this.#send('D', id);
    this.#updateRef();
  }

  /** Stops the spawner (commands it started run on; their events are lost). */
  close(): void {
    const child = this.#child;
    this.#child = null;
    child?.stdin?.end();
    this.#failAll('the spawner was closed');
  }

  #send(op: string, id: number, payload: Buffer = Buffer.alloc(0)): void {
    const input = this.#ensureStarted();
    const header = Buffer.alloc(9);
    header.writeUInt32BE(5 + payload.length, 0);
    header.write(op, 4, 'latin1');
    header.writeUInt32BE(id, 5);
    input.write(payload.length > 0 ? Buffer.concat([header, payload]) : header);
    this.#updateRef();
  }

  #ensureStarted(): Writable {
    if (this.#child !== null && this.#input !== null) return this.#input;
    const [command, args] = this.kind === 'python'
      ? [PYTHON, ['-I', '-S', PYTHON_SCRIPT, String(this.#nice)]]
      : [PERL, ['-e', SPAWNER_SCRIPT, String(PRCTL_SYSCALL[process.arch] ?? 0), String(this.#nice)]];
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'inherit'], env: { PATH: '/usr/bin:/bin' } });
    this.#child = child;
    this.#input = child.stdin!;
    this.#pending = [];
    this.#pendingBytes = 0;
    // Writes to a spawner that died fail; its exit below tells every command.
    child.stdin!.on('error', () => undefined);
    child.on('error', () => undefined);
    child.stdout!.on('data', (chunk: Buffer) => this.#receive(chunk));
    child.on('exit', () => {
      if (this.#child !== child) return;
      this.#child = null;
      this.#input = null;
      this.#failAll('the spawner process ended');
    });
    return child.stdin!;
  }

  /** The spawner keeps the event loop alive only while commands of ours run or questions wait for answers. */
  #updateRef(): void {
    const child = this.#child;
    if (child === null) return;
    const streams = [child.stdin, child.stdout] as unknown as { ref?: () => void; unref?: () => void }[];
    if (this.#commands.size > 0 || this.#queries.size > 0) {
      child.ref();
      for (const stream of streams) stream.ref?.();
    } else {
      child.unref();
      for (const stream of streams) stream.unref?.();
    }
  }

  #failAll(message: string): void {
    const queries = [...this.#queries.values()];
    this.#queries.clear();
    for (const answer of queries) answer(true);
    const commands = [...this.#commands.values()];
    this.#commands.clear();
    for (const events of commands) events.onFail(message);
  }

  #receive(chunk: Buffer): void {
    this.#pending.push(chunk);
    this.#pendingBytes += chunk.length;
    if (this.#pendingBytes < 9) return;
    let data = this.#pending.length === 1 ? this.#pending[0]! : Buffer.concat(this.#pending);
    let at = 0;
    while (data.length - at >= 9) {
      const length = data.readUInt32BE(at + 5);
      if (length > MAX_EVENT_BYTES) {
        this.#child?.kill('SIGKILL');
        return;
      }
      if (data.length - at < 9 + length) break;
      const op = String.fromCharCode(data[at]!);
      const id = data.readUInt32BE(at + 1);
      this.#event(op, id, data.subarray(at + 9, at + 9 + length));
      at += 9 + length;
    }
    data = data.subarray(at);
    this.#pending = data.length > 0 ? [data] : [];
    this.#pendingBytes = data.length;
  }

  #event(op: string, id: number, payload: Buffer): void {
    if (op === 'Q') {
      const answer = this.#queries.get(id);
      this.#queries.delete(id);
      this.#updateRef();
      answer?.(payload.toString('latin1') !== '0');
      return;
    }
    const events = this.#commands.get(id);
    if (events === undefined) return;
    switch (op) {
      case 'P':
        events.onPid(Number(payload.toString('latin1')));
        break;
      case 'O':
        // The payload is a view on a buffer reused for the next frames: the listener may keep it.
        events.onData(1, Buffer.from(payload));
        break;
      case 'E':
        events.onData(2, Buffer.from(payload));
        break;
      case 'C':
        events.onClose(payload.toString('latin1') === '2' ? 2 : 1);
        break;
      case 'X': {
        const [code, signal, escaped] = payload.toString('latin1').split(' ').map(Number);
        events.onExit(code ?? -1, signal ?? 0, escaped !== 0);
        break;
      }
      case 'F':
        this.#commands.delete(id);
        this.#updateRef();
        events.onFail(payload.toString('utf8'));
        break;
    }
  }
}
