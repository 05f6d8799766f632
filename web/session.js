// Signing in, for a gateway run with `--auth jwt` (docs/protocol.md,
// "Authentication"; tokens in auth.js): the first frames of each connection,
// the gateway's `auth` frames, renewal before expiry, and the signed-out
// panel. In `--auth none` mode it only says "connected".

import * as auth from "./auth.js";

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

/** `onConnected(signedIn)`: the session may start (join rooms, send the outbox). */
export function createSession({ store, conn, onConnected, $ }) {
  /** "none" or "jwt", as the gateway showed it (before the first sign-in: last visit's). */
  let authMode = auth.lastMode();
  /** Who the gateway says this connection is, {sub, exp, since}; null in none mode. */
  let session = null;
  let renewTimer = null;
  let renewFailures = 0;
  /** Why the page is signed out; while set, nothing reconnects until the user signs in again. */
  let signedOut = null;
  /** With a token, the server holds the display name (seeded by the token's name claim). */
  let ownNameKnown = false;

  /**
   * Says who this connection is, then starts the session. A token the page
   * holds goes in the first frame. Then comes a harmless call: by its answer
   * the gateway has either said who we are (in jwt mode its `auth` frame
   * always comes first) or said nothing (none mode), or refused us.
   */
  async function signIn(socket) {
    const token = auth.storedToken();
    if (token) conn.send({ auth: { token } });
    try {
      await conn.call("get_user", { user_id: store.state.userId });
    } catch (e) {
      if (!conn.isCurrent(socket)) return; // closed meanwhile: the close says why
      if (e.code === "UNAUTHENTICATED") {
        conn.drop();
        onSignedOut({ text: "This chat needs you to sign in." });
        return;
      }
      // NOT_FOUND (a new user) or another error: an answer all the same.
    }
    if (!conn.isCurrent(socket)) return;
    authMode = session ? "jwt" : "none";
    auth.rememberMode(authMode);
    store.setConnection("connected", "Connected");
    if (session) learnOwnName();
    onConnected(!!session);
  }

  /** The gateway's `{"auth": {"sub", "exp"}}`: at sign-in and after each renewal. */
  function onAuth(a) {
    if (!a || typeof a.sub !== "string" || !a.sub || typeof a.exp !== "number") return;
    session = { sub: a.sub, exp: a.exp, since: Date.now() };
    renewFailures = 0;
    if (a.sub !== store.state.userId) {
      ownNameKnown = false;
      const name = store.state.names.get(a.sub) || auth.claimsOf(auth.storedToken())?.name || a.sub;
      store.adoptIdentity(a.sub, name);
    }
    scheduleRenewal();
    render();
  }

  /**
   * Asks the server for this user's name (jwt mode). A first-time user is
   * registered by its first join, a moment after it is answered: until then
   * there is no name, and it is asked again after 1, 2 and 4 s.
   */
  function learnOwnName(tries = 0) {
    if (ownNameKnown) return;
    conn
      .call("get_user", { user_id: store.state.userId })
      .then((a) => {
        if (!a.user || !a.user.name) throw { code: "NOT_FOUND" };
        ownNameKnown = true;
        store.setUserName(a.user.name);
      })
      .catch((e) => {
        if (e.code === "NOT_FOUND" && tries < 3) {
          setTimeout(() => conn.isOpen() && learnOwnName(tries + 1), 1000 * 2 ** tries);
        }
      });
  }

  function scheduleRenewal() {
    clearTimeout(renewTimer);
    if (session && auth.canRenew()) renewTimer = setTimeout(renew, auth.renewDelay(session.exp, session.since));
  }

  /** Fetches a fresh token from the app and presents it; the gateway answers a new `auth` frame. */
  async function renew() {
    try {
      const token = await auth.fetchToken();
      if (!conn.send({ auth: { token } })) return; // the next connection presents it
    } catch (e) {
      console.warn("wsgate: could not renew the sign-in:", e.message);
      retryRenewal();
    }
  }

  /** Tries again while the session lasts: 5 s, 10 s, ... but never past half the time left. */
  function retryRenewal() {
    renewFailures += 1;
    const left = session ? session.exp * 1000 - Date.now() : 0;
    if (left > 0) renewTimer = setTimeout(renew, Math.min(left / 2, 5000 * renewFailures));
  }

  function onSignedOut(problem) {
    if (problem.expired && auth.canRenew() && !problem.retried) {
      // The tab may have slept through its renewal: the app may still have a token for us.
      auth
        .fetchToken()
        .then(() => conn.connect())
        .catch(() => onSignedOut({ ...problem, retried: true }));
      return;
    }
    auth.forgetToken(); // refused or expired: presenting it again would fail again
    signedOut = problem.text;
    conn.stop();
    store.setConnection("signed-out", "Signed out");
    render();
  }

  /** Starts over with whatever token there is now (a new sign-in link, or one from the app). */
  function signInAgain() {
    signedOut = null;
    render();
    conn.restart();
  }

  function signOut() {
    auth.forgetToken();
    conn.drop();
    onSignedOut({ text: "You signed out." });
  }

  function render() {
    $("signed-in").hidden = !session;
    if (session) {
      $("signed-in-sub").textContent = session.sub;
      const until = timeFmt.format(new Date(session.exp * 1000));
      $("signed-in-until").textContent = auth.canRenew() ? "" : ` until ${until}`;
      $("sign-out").hidden = !auth.storedToken(); // an app's cookie is the app's to clear
    }
    $("signin").hidden = !signedOut;
    document.body.classList.toggle("signed-out", !!signedOut);
    if (signedOut) $("signin-text").textContent = signedOut;
  }

  $("sign-out").addEventListener("click", signOut);
  $("signin-retry").addEventListener("click", async () => {
    if (auth.canRenew()) await auth.fetchToken().catch(() => {});
    signInAgain();
  });

  return {
    signIn,
    onAuth,
    signInAgain,
    /** The connection is gone: the session starts again with the next one. */
    onDrop() {
      session = null;
      clearTimeout(renewTimer);
    },
    /** After a close: false when it is about the token (then the page is signed out). */
    onClose(ev) {
      const problem = auth.signInProblem(ev.code, ev.reason);
      if (problem) onSignedOut(problem);
      return !problem && !signedOut;
    },
    mayReconnect: () => !signedOut,
    /** A refused upgrade (401: a bad cookie) looks like any failed connection to a page. */
    waitText: (text, neverOpened) =>
      authMode === "jwt" && neverOpened >= 2 ? `Can't connect (has your sign-in expired?) ${text}` : text,
    /** A frame for the session: `auth`, or a refused renewal. */
    onFrame(frame) {
      if (frame.auth) {
        onAuth(frame.auth);
        return true;
      }
      if (frame.error && frame.error.code === "UNAUTHENTICATED" && !frame.request_id && session) {
        // A renewal the gateway refused: the current token holds until it expires.
        retryRenewal();
        return true;
      }
      return false;
    },
  };
}
