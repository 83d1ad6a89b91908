import type { Agent as AgentType, Dispatcher } from 'undici';
import { raiseLlhttpTieringBudget } from './llhttp-tiering.js';

/**
 * undici, loaded only when a command talks HTTP, and only the parts the registry client uses:
 * the Agent and the request API take ~20 ms to load, the whole package (fetch, websockets,
 * caches) ~70 ms — a third of a node's `kbundle verify`.
 */
export interface HttpApi {
  Agent: typeof AgentType;
  request(
    url: string | URL,
    opts: { method: Dispatcher.HttpMethod; headers?: Record<string, string>; body?: Dispatcher.DispatchOptions['body']; reset?: boolean; dispatcher: Dispatcher },
  ): Promise<Dispatcher.ResponseData>;
}

// A dynamic import of a CommonJS module yields { default: exports } (and, unbundled, named exports too).
const cjs = <T>(m: unknown): T => (m as { default?: T }).default ?? (m as T);

let core: Promise<HttpApi> | undefined;
export function undici(): Promise<HttpApi> {
  raiseLlhttpTieringBudget();
  core ??= Promise.all([import('undici/lib/dispatcher/agent.js'), import('undici/lib/api/api-request.js')]).then(([agentModule, requestModule]) => {
    const Agent = cjs<typeof AgentType>(agentModule);
    const apiRequest = cjs<(this: Dispatcher, o: Dispatcher.RequestOptions) => Promise<Dispatcher.ResponseData>>(requestModule);
    return {
      Agent,
      request(url, { dispatcher, ...rest }) {
        const u = new URL(url);
        return apiRequest.call(dispatcher, { ...rest, origin: u.origin, path: `${u.pathname}${u.search}` } as Dispatcher.RequestOptions);
      },
    };
  });
  return core;
}
