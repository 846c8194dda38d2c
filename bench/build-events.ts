/** How a bench waits for a build's end. */
import { signRequest } from '../shared/auth.ts';
import { SseParser } from '../cli/event-stream.ts';

const TERMINAL = ['SUCCESS', 'FAILURE', 'ERROR', 'CANCELED'];

/**
 * The build's terminal status, from the event stream as our CLI follows a build (SPEC §14): polling
 * `GET /v1/build/:id` every 20 ms cost this process (the master's) about 1 ms of its thread per read.
 */
export async function waitForTerminalStatus(url: string, secret: string, buildId: number): Promise<string> {
  // since_id=0 replays the build's events from the start: a status reached before the stream opened is not missed.
  const path = `/v2/events?build_id=${buildId}&tags=BUILD_STATUS&since_id=0`;
  const controller = new AbortController();
  const response = await fetch(`${url}${path}`, { headers: { ...signRequest(secret, 'GET', path), Accept: 'text/event-stream' }, signal: controller.signal });
  if (!response.ok || response.body === null) throw new Error(`the event stream answered ${response.status}: ${await response.text()}`);
  const parser = new SseParser();
  const decoder = new TextDecoder();
  try {
    for await (const chunk of response.body) {
      for (const frame of parser.push(decoder.decode(chunk, { stream: true }))) {
        const { status } = JSON.parse(frame.data) as { status?: string };
        if (status !== undefined && TERMINAL.includes(status)) return status;
      }
    }
  } finally {
    controller.abort();
  }
  throw new Error(`the event stream of build ${buildId} ended before the build did`);
}
