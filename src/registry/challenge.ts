/** `WWW-Authenticate` parsing (RFC 7235) for the two schemes registries use: Basic and Bearer. */
export interface AuthChallenge {
  scheme: 'basic' | 'bearer' | string;
  params: Record<string, string>;
}

/**
 * Parse one header value, which may hold several challenges:
 * `Bearer realm="https://auth/token",service="reg",scope="repository:a:pull", Basic realm="x"`.
 */
export function parseChallenges(header: string | string[] | undefined): AuthChallenge[] {
  if (header === undefined) return [];
  const values = Array.isArray(header) ? header : [header];
  const out: AuthChallenge[] = [];
  for (const value of values) {
    let i = 0;
    const n = value.length;
    const skipWs = (): void => {
      while (i < n && /[\s,]/.test(value[i]!)) i++;
    };
    const token = (): string => {
      const start = i;
      while (i < n && /[!#$%&'*+.^_`|~0-9A-Za-z-]/.test(value[i]!)) i++;
      return value.slice(start, i);
    };
    let current: AuthChallenge | undefined;
    while (i < n) {
      skipWs();
      const start = i;
      const word = token();
      if (!word) {
        i++;
        continue;
      }
      let j = i;
      while (j < n && value[j] === ' ') j++;
      if (value[j] === '=' && current) {
        // auth-param: name = token | quoted-string
        i = j + 1;
        while (i < n && value[i] === ' ') i++;
        let v = '';
        if (value[i] === '"') {
          i++;
          while (i < n && value[i] !== '"') {
            if (value[i] === '\\' && i + 1 < n) i++;
            v += value[i];
            i++;
          }
          i++;
        } else {
          const vs = i;
          while (i < n && value[i] !== ',' && value[i] !== ' ') i++;
          v = value.slice(vs, i);
        }
        current.params[word.toLowerCase()] = v;
        continue;
      }
      // A new challenge: scheme name (a token68 after it is ignored; registries do not use it).
      if (i === start) i++;
      current = { scheme: word.toLowerCase(), params: {} };
      out.push(current);
    }
  }
  return out;
}
