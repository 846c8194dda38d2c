// Lint for what the types cannot catch (issue 9): promises nobody awaits or handles, and promises handed to
// callers that ignore them (event handlers, express routes). Type-aware, over the same files as tsconfig.json.
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules/**', 'coverage/**', 'master/ui/static/**'] },
  {
    files: ['**/*.ts'],
    languageOptions: {
      parser: tseslint.parser,
      // Config files outside tsconfig.json's include get a default project instead of a parse error.
      parserOptions: { projectService: { allowDefaultProject: ['vitest.browser.config.ts'] }, tsconfigRootDir: import.meta.dirname },
    },
    plugins: { '@typescript-eslint': tseslint.plugin },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
    },
  },
);
