// A real OpenID provider for the web crate's SSO tests: npm's oidc-provider with a static test
// key (jwks.json, used nowhere else), one registered confidential client, PKCE required, and its
// development login form, which any login passes. The login names the account:
//
//   ada@acme.test              -> email ada@acme.test, email_verified true
//   unverified:bob@acme.test   -> email bob@acme.test, email_verified false
//
// Consent is granted without asking (a first-party client), so a sign-in is: authorize ->
// login form -> redirect back with a code. Configuration comes from the environment
// (OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, OIDC_REDIRECT_URI); the provider listens on a free
// loopback port and prints `listening <issuer>` once it serves.

import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const jwks = JSON.parse(readFileSync(new URL('./jwks.json', import.meta.url), 'utf8'));
const clientId = process.env.OIDC_CLIENT_ID;
const clientSecret = process.env.OIDC_CLIENT_SECRET;
const redirectUri = process.env.OIDC_REDIRECT_URI;
if (!clientId || !clientSecret || !redirectUri) {
  console.error('set OIDC_CLIENT_ID, OIDC_CLIENT_SECRET and OIDC_REDIRECT_URI');
  process.exit(2);
}

let handler = (_request, response) => {
  response.statusCode = 503;
  response.end();
};
const server = createServer((request, response) => handler(request, response));
server.listen(0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    jwks,
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    pkce: { required: () => true },
    // Put the email claims in the ID token (as the common IdPs do), not only in userinfo.
    conformIdTokenClaims: false,
    claims: { openid: ['sub'], email: ['email', 'email_verified'] },
    features: { devInteractions: { enabled: true } },
    cookies: { keys: ['tributary test provider cookie key'] },
    async findAccount(_ctx, id) {
      const unverified = id.startsWith('unverified:');
      const email = unverified ? id.slice('unverified:'.length) : id;
      return {
        accountId: id,
        async claims() {
          return { sub: id, email, email_verified: !unverified };
        },
      };
    },
    async loadExistingGrant(ctx) {
      const grantId = ctx.oidc.result?.consent?.grantId
        || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (grantId) {
        return ctx.oidc.provider.Grant.find(grantId);
      }
      const grant = new ctx.oidc.provider.Grant({
        clientId: ctx.oidc.client.clientId,
        accountId: ctx.oidc.session.accountId,
      });
      grant.addOIDCScope('openid email');
      grant.addOIDCClaims(['email', 'email_verified']);
      await grant.save();
      return grant;
    },
  });
  handler = provider.callback();
  console.log(`listening ${issuer}`);
});

// The test ends the process by closing its stdin (or by killing it).
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
