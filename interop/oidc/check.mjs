// SSO interoperability check: the gateway (an OIDC relying party) against oidc-provider,
// an OpenID Certified provider, on 127.0.0.1. Usage:
//   node check.mjs provider --port P --redirect URL     serve the provider (prints "ready")
//   node check.mjs check --gateway URL --issuer URL --app-key KEY
// The provider signs in the account "ada" without a form (its interaction route finishes
// the login at once and the grant is loaded without a consent prompt), as an IdP would after
// the user typed a password. The check drives a browser (with cookies) through
// /sso/start -> the provider -> /sso/oidc/callback -> the app, exchanges the code and checks
// the launch, then the refusals. Prints one line per check; exit 1 when any failed.
import http from 'node:http';
import Provider from 'oidc-provider';

const args = Object.fromEntries(
  process.argv.slice(3).reduce((acc, v, i, a) => (i % 2 === 0 ? [...acc, [v.replace(/^--/, ''), a[i + 1]]] : acc), []),
);

const ACCOUNT = {
  sub: 'ada-7f3c',
  email: 'ada@interop.example',
  email_verified: true,
  name: 'Ada Lovelace',
};

async function serveProvider() {
  const issuer = `http://127.0.0.1:${args.port}`;
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: 'gateway',
        client_secret: 'interop-secret-0123456789',
        redirect_uris: [args.redirect],
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
    features: { devInteractions: { enabled: false } },
    pkce: { required: () => true },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    async findAccount(ctx, id) {
      return { accountId: id, claims: async () => ({ ...ACCOUNT, sub: id }) };
    },
    async loadExistingGrant(ctx) {
      const grant = new ctx.oidc.provider.Grant({
        accountId: ctx.oidc.session.accountId,
        clientId: ctx.oidc.client.clientId,
      });
      grant.addOIDCScope('openid email profile');
      await grant.save();
      return grant;
    },
  });
  provider.proxy = false;
  const callback = provider.callback();
  http
    .createServer(async (req, res) => {
      if (req.url.startsWith('/interaction/')) {
        try {
          await provider.interactionFinished(req, res, { login: { accountId: ACCOUNT.sub } }, { mergeWithLastSubmission: false });
        } catch (e) {
          res.statusCode = 500;
          res.end(String(e));
        }
        return;
      }
      callback(req, res);
    })
    .listen(Number(args.port), '127.0.0.1', () => console.log('ready'));
}

// A browser: follows redirects by hand, keeps cookies per host:port.
const jar = new Map();
function cookieHeader(url) {
  const host = new URL(url).host;
  const c = jar.get(host) || {};
  return Object.entries(c).map(([k, v]) => `${k}=${v}`).join('; ');
}
function keepCookies(url, res) {
  const host = new URL(url).host;
  const c = jar.get(host) || {};
  for (const line of res.headers.getSetCookie()) {
    const [pair] = line.split(';');
    const i = pair.indexOf('=');
    c[pair.slice(0, i).trim()] = pair.slice(i + 1).trim();
  }
  jar.set(host, c);
}
async function get(url) {
  const res = await fetch(url, { redirect: 'manual', headers: { cookie: cookieHeader(url) } });
  keepCookies(url, res);
  return res;
}
/// Follow redirects until one leaves for `stopAt` (returned, not fetched) or a page answers.
async function follow(url, stopAt) {
  for (let i = 0; i < 20; i++) {
    if (stopAt && url.startsWith(stopAt)) return { stoppedAt: url };
    const res = await get(url);
    if (res.status >= 300 && res.status < 400) {
      url = new URL(res.headers.get('location'), url).toString();
      continue;
    }
    return { status: res.status, body: await res.text(), url };
  }
  throw new Error('too many redirects');
}

let failures = 0;
function check(ok, what, detail = '') {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}${ok || !detail ? '' : `: ${detail}`}`);
  if (!ok) failures++;
}

async function runCheck() {
  const { gateway, issuer } = args;
  const appUrl = 'https://app.interop.example/sso';
  // 1. A full sign-in, routed by the email's domain.
  const start = await get(`${gateway}/sso/start?email=${encodeURIComponent('ada@interop.example')}`);
  const authorize = start.headers.get('location') || '';
  check(start.status === 302 && authorize.startsWith(`${issuer}/`), 'start redirects to the provider', `${start.status} ${authorize}`);
  const a = new URL(authorize);
  check(a.searchParams.get('code_challenge_method') === 'S256', 'PKCE S256 is sent');
  check((a.searchParams.get('nonce') || '').length >= 22, 'a nonce is sent');
  // Through the provider back to the gateway's callback (stop there to keep it for a replay).
  const toCallback = await follow(authorize, `${gateway}/sso/oidc/callback`);
  check(!!toCallback.stoppedAt, 'the provider sends the browser to the callback', JSON.stringify(toCallback).slice(0, 300));
  const callbackUrl = toCallback.stoppedAt || '';
  const cb = await get(callbackUrl);
  const toApp = cb.headers.get('location') || '';
  check(cb.status === 302 && toApp.startsWith(appUrl), 'the callback hands the user to the app', `${cb.status} ${toApp} ${cb.status === 302 ? '' : (await cb.text()).slice(0, 400)}`);
  const code = toApp ? new URL(toApp).searchParams.get('code') : null;
  const ex = await fetch(`${gateway}/v1/launches/exchange`, {
    method: 'POST',
    headers: { authorization: `Bearer ${args['app-key']}`, 'content-type': 'application/json' },
    body: JSON.stringify({ code }),
  });
  const launch = await ex.json();
  check(ex.status === 200, 'the app exchanges the code', JSON.stringify(launch));
  check(launch.kind === 'sso', 'the launch is kind sso', launch.kind);
  check(launch.user?.id === ACCOUNT.sub, 'the user is the provider\'s subject', JSON.stringify(launch.user));
  check(launch.user?.name === ACCOUNT.name, 'the name comes through', JSON.stringify(launch.user));
  check(launch.email === ACCOUNT.email, 'the email comes through (userinfo)', launch.email);
  check(launch.issuer === issuer, 'the issuer is named', launch.issuer);
  // 2. Refusals.
  const replay = await get(callbackUrl);
  const replayBody = await replay.text();
  check(replay.status === 400 && replayBody.includes('already used'), 'a replayed callback is refused', `${replay.status}`);
  const forged = new URL(callbackUrl);
  forged.searchParams.set('state', 'forged-state-value');
  const f = await get(forged.toString());
  check(f.status === 400 && (await f.text()).includes('not one the gateway started'), 'a forged state is refused', `${f.status}`);
  // A code the provider never issued, with a fresh state from the gateway.
  const s2 = await get(`${gateway}/sso/start?organisation=interop-oidc`);
  const st = new URL(s2.headers.get('location') || `${gateway}/`).searchParams.get('state');
  const bad = await get(`${gateway}/sso/oidc/callback?code=not-a-code&state=${encodeURIComponent(st || '')}`);
  const badBody = await bad.text();
  check(bad.status === 502 && badBody.includes('code exchange failed'), 'an unknown code is refused by the provider and reported', `${bad.status} ${badBody.slice(0, 300)}`);
  console.log(failures === 0 ? 'all checks passed' : `${failures} check(s) failed`);
  process.exit(failures === 0 ? 0 : 1);
}

if (process.argv[2] === 'provider') await serveProvider();
else if (process.argv[2] === 'check') await runCheck();
else {
  console.error('usage: node check.mjs provider --port P --redirect URL | check --gateway URL --issuer URL --app-key KEY');
  process.exit(2);
}
