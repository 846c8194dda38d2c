import { describe, expect, it } from 'vitest';
import { ClusterRunnerError } from '../../shared/errors.ts';
describe('errors', () => { it('carries a status', () => { expect(new ClusterRunnerError('X', 'm', { status: 400 }).status).toBe(400); }); });
