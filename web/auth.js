// Sign-in for a gateway run with `--auth jwt` (docs/protocol.md,
// "Authentication"). The page holds a token only when it came in a sign-in
// link (`#token=<jwt>`, the fragment never reaches a server or its logs); an
// app that sets the HttpOnly cookie instead leaves the page nothing to hold,
// and the gateway tells the page who it is in its first frame.
//
// Renewal needs a source of fresh tokens: the app's endpoint named by
// `<meta name="wsgate-token-url" content="/api/chat-token">`, fetched with
// the app's cookies and answering the token as text or `{"token": "..."}`.
// Without one, the session ends at the token's expiry.

const TOKEN_KEY = "wsgate.auth.token";
const MODE_KEY = "wsgate.auth.mode";
/** Renew this long before expiry (or a fifth of the lifetime, if shorter). */
const RENEW_AHEAD_MS = 5 * 60 * 1000;

function read(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null;
  }
}
function write(key, value) {
  try {
    if (value === null) localStorage.removeItem(key);
    else localStorage.setItem(key, value);
  } catch {
    /* storage disabled: the token lives for this page only */
  }
}

/**
 * The claims of a token, read without verifying it (the gateway verifies):
 * the page only needs `sub` and `exp`. `null` for anything not a JWT.
 */
export function claimsOf(token) {
  if (typeof token !== "string") return null;
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = new TextDecoder().decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)));
    const claims = JSON.parse(json);
    if (!claims || typeof claims.sub !== "string" || !claims.sub || typeof claims.exp !== "number") return null;
    return claims;
  } catch {
    return null;
  }
}

const expired = (claims, now = Date.now()) => claims.exp * 1000 <= now;

/**
 * Takes a sign-in link's token out of the URL: `#token=<jwt>` or
 * `#token=<jwt>&room=<name>`. Stores the token, rewrites the URL to `#<room>`
 * (or no fragment) so it is neither bookmarked nor shared, and returns true
 * if there was one.
 */
export function takeTokenFromUrl() {
  if (!location.hash.startsWith("#token=")) return false;
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token") || "";
  const room = params.get("room");
  const rest = room ? `#${encodeURIComponent(room)}` : "";
  history.replaceState(null, "", location.pathname + location.search + rest);
  write(TOKEN_KEY, token);
  return true;
}

/** The stored token, unless it has expired (then it is forgotten). */
export function storedToken() {
  const token = read(TOKEN_KEY);
  const claims = claimsOf(token);
  if (!claims || expired(claims)) {
    if (token !== null) write(TOKEN_KEY, null);
    return null;
  }
  return token;
}

export function forgetToken() {
  write(TOKEN_KEY, null);
}

/** "jwt" or "none", as the gateway showed it last time; null the first time. */
export const lastMode = () => read(MODE_KEY);
export const rememberMode = (mode) => write(MODE_KEY, mode);

/** The app's token endpoint, if the page names one. */
function tokenUrl() {
  const meta = document.querySelector('meta[name="wsgate-token-url"]');
  return meta && meta.content ? meta.content : null;
}
export const canRenew = () => tokenUrl() !== null;

/**
 * A fresh token from the app's endpoint. Rejects with a message when there is
 * no endpoint or it does not answer a token.
 */
export async function fetchToken() {
  const url = tokenUrl();
  if (!url) throw new Error("no token endpoint");
  const res = await fetch(url, { credentials: "include", cache: "no-store" });
  if (!res.ok) throw new Error(`the token endpoint answered ${res.status}`);
  const body = (await res.text()).trim();
  let token = body;
  if (body.startsWith("{")) {
    try {
      token = JSON.parse(body).token;
    } catch {
      token = null;
    }
  }
  if (!claimsOf(token)) throw new Error("the token endpoint did not answer a token");
  write(TOKEN_KEY, token);
  return token;
}

/** Milliseconds from now until a session expiring at `exp` (seconds) should renew. */
export function renewDelay(exp, issuedAt = Date.now()) {
  const end = exp * 1000;
  const lifetime = Math.max(0, end - issuedAt);
  const ahead = Math.min(RENEW_AHEAD_MS, lifetime / 5);
  return Math.max(0, end - ahead - Date.now());
}

/**
 * What a close by the gateway means for signing in: `{signedOut, text}` when
 * the close is about the token (reconnecting with it would fail again), else
 * null. The reasons are docs/protocol.md's.
 */
export function signInProblem(code, reason) {
  if (code !== 1008) return null;
  if (reason === "token expired") return { text: "Your session has expired.", expired: true };
  if (reason.startsWith("unauthorized:")) {
    return { text: `Your sign-in was refused (${reason.slice("unauthorized:".length).trim()}).` };
  }
  if (reason.startsWith("authentication timeout")) return { text: "This chat needs you to sign in." };
  if (reason === "the refresh token is for another user") {
    return { text: "You were signed out: the new sign-in was for another user." };
  }
  return null;
}
