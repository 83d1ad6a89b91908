// undici's internal modules, imported directly by src/registry/undici-lazy.ts to avoid loading
// the whole package (fetch, websockets, caches) on every registry command.
declare module 'undici/lib/dispatcher/agent.js' {
  const Agent: typeof import('undici').Agent;
  export = Agent;
}
declare module 'undici/lib/api/api-request.js' {
  function request(this: import('undici').Dispatcher, opts: import('undici').Dispatcher.RequestOptions): Promise<import('undici').Dispatcher.ResponseData>;
  export = request;
}
