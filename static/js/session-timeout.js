/* Idle sign-out warning. The server signs a session out after SESSION_IDLE_MINUTES
   without a request; this shows a warning a few minutes before, with a button to stay
   signed in, and reloads the page (to the sign-in) once the time is up. The timing comes
   from data attributes on <body>; no inline script (Content-Security-Policy). Tabs of the
   same browser share the deadline through localStorage, so activity in one tab keeps
   the others from warning. */
(function () {
  "use strict";

  var body = document.body;
  if (!body || !body.hasAttribute("data-session-idle-seconds")) { return; }

  var idle = parseInt(body.getAttribute("data-session-idle-seconds"), 10);
  var left = parseInt(body.getAttribute("data-session-seconds-left"), 10);
  var warnBefore = parseInt(body.getAttribute("data-session-warn-seconds"), 10);
  var slack = parseInt(body.getAttribute("data-session-slack-seconds"), 10) || 0;
  var keepaliveUrl = body.getAttribute("data-session-keepalive-url");
  var KEY = "pumpclinic.session-deadline";
  if (!(idle > 0) || isNaN(left)) { return; }

  var deadline = Date.now() + left * 1000;
  var banner = null;
  var timer = null;

  function store(value) {
    try { window.localStorage.setItem(KEY, String(value)); } catch (e) { /* private mode */ }
  }

  function activity() {
    // The server counts a request as activity at most every `slack` seconds.
    setDeadline(Date.now() + (idle - slack) * 1000, true);
  }

  function setDeadline(value, share) {
    deadline = value;
    if (share) { store(value); }
    hideBanner();
    schedule();
  }

  function minutesText(ms) {
    var minutes = Math.max(1, Math.ceil(ms / 60000));
    return minutes === 1 ? "1 minute" : minutes + " minutes";
  }

  function showBanner() {
    if (!banner) {
      banner = document.createElement("div");
      banner.className = "banner banner-critical session-timeout";
      banner.setAttribute("role", "alert");
      var inner = document.createElement("div");
      inner.className = "banner-inner";
      var text = document.createElement("span");
      text.className = "session-timeout-text";
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = "Stay signed in";
      button.addEventListener("click", stayIn);
      inner.appendChild(text);
      inner.appendChild(document.createTextNode(" "));
      inner.appendChild(button);
      banner.appendChild(inner);
      var main = document.getElementById("main");
      body.insertBefore(banner, main || body.firstChild);
    }
    banner.hidden = false;
    banner.querySelector(".session-timeout-text").textContent =
      "For patient privacy you will be signed out in " + minutesText(deadline - Date.now()) +
      " without activity. Unsaved changes on this page would be lost.";
  }

  function hideBanner() {
    if (banner) { banner.hidden = true; }
  }

  function stayIn() {
    // Any signed-in request is activity; this page is small and records nothing.
    window.fetch(keepaliveUrl, { method: "GET", credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.redirected || !response.ok) { window.location.reload(); return; }
        activity();
      })
      .catch(function () { /* offline: keep the warning */ });
  }

  function check() {
    var shared = NaN;
    try { shared = parseInt(window.localStorage.getItem(KEY), 10); } catch (e) { /* ignore */ }
    if (shared > deadline) { deadline = shared; }
    var remaining = deadline - Date.now();
    if (remaining <= -1000) {
      window.location.reload();  // the server has signed the session out: to the sign-in page
      return;
    }
    if (remaining <= warnBefore * 1000) { showBanner(); } else { hideBanner(); }
    schedule();
  }

  function schedule() {
    if (timer) { window.clearTimeout(timer); }
    var remaining = deadline - Date.now();
    var wait = remaining > warnBefore * 1000 ? remaining - warnBefore * 1000 : 15000;
    timer = window.setTimeout(check, Math.max(1000, Math.min(wait, remaining + 1500, 60000)));
  }

  window.addEventListener("storage", function (event) {
    if (event.key === KEY && event.newValue) {
      var value = parseInt(event.newValue, 10);
      if (value > deadline) { setDeadline(value, false); }
    }
  });
  document.addEventListener("htmx:afterRequest", activity);

  store(deadline);
  schedule();
})();
