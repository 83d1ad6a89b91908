/** Sigstore public-good service URLs: keyless signing's defaults (cosign's too). */
export const DEFAULT_FULCIO_URL = 'https://fulcio.sigstore.dev';
export const DEFAULT_REKOR_URL = 'https://rekor.sigstore.dev';
