// A real OpenID Connect provider (node-oidc-provider) on loopback, for tests/access/test_oidc.py.
//
//   node provider.mjs [PORT]      PORT from argv, else $OIDC_PORT, else 0 (the system picks one)
//
// Environment:
//   OIDC_REDIRECT_URIS   space-separated redirect URIs registered for both clients (required)
//   OIDC_CLIENT_SECRET   the confidential client's secret (required)
//
// Clients: "slidebank-confidential" (client_secret_basic) and "slidebank-public"
// (token_endpoint_auth_method none). PKCE is required of both. Sign-in uses oidc-provider's
// development interactions: any login name is accepted, becomes the subject, and a consent
// screen follows. Once listening it prints one line on stdout:
//
//   oidc-provider ready at http://127.0.0.1:PORT

import { createServer } from 'node:http';
import { generateKeyPairSync, randomBytes } from 'node:crypto';

import Provider from 'oidc-provider';

const port = Number(process.argv[2] ?? process.env.OIDC_PORT ?? 0);
const redirectUris = (process.env.OIDC_REDIRECT_URIS ?? '').split(/\s+/).filter(Boolean);
const clientSecret = process.env.OIDC_CLIENT_SECRET ?? '';
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  throw new Error(`invalid port: ${process.argv[2] ?? process.env.OIDC_PORT}`);
}
if (redirectUris.length === 0 || clientSecret === '') {
  throw new Error('OIDC_REDIRECT_URIS and OIDC_CLIENT_SECRET must be set');
}

// The issuer URL has to name the port, so with port 0 the socket is bound before the provider
// exists; that also leaves no window for another process to take the port.
const server = createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(port, '127.0.0.1', resolve);
});
const issuer = `http://127.0.0.1:${server.address().port}`;

// A fresh key per run rather than oidc-provider's well-known development keys: a token signed
// by anyone else's copy of those must not verify.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = {
  ...privateKey.export({ format: 'jwk' }),
  kid: `test-${randomBytes(6).toString('hex')}`,
  use: 'sig',
  alg: 'RS256',
};

const codeFlow = {
  redirect_uris: redirectUris,
  grant_types: ['authorization_code'],
  response_types: ['code'],
};

const provider = new Provider(issuer, {
  clients: [
    {
      ...codeFlow,
      client_id: 'slidebank-confidential',
      client_secret: clientSecret,
      token_endpoint_auth_method: 'client_secret_basic',
    },
    {
      ...codeFlow,
      client_id: 'slidebank-public',
      token_endpoint_auth_method: 'none',
    },
  ],
  pkce: { required: () => true },
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  claims: {
    openid: ['sub'],
    profile: ['name'],
    email: ['email', 'email_verified'],
  },
  // By default scope-requested claims go to the userinfo endpoint only when an access token is
  // issued; the client under test reads the ID token alone, so put them there.
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: true } },
  async findAccount(_ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        return {
          sub,
          name: `Test user ${sub}`,
          email: `${sub}@example.test`,
          email_verified: true,
        };
      },
    };
  },
});

server.on('request', provider.callback());

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

console.log(`oidc-provider ready at ${issuer}`);
