// Progressive enhancement only: every page works without this file.
(function () {
  "use strict";
  var body = document.body;

  // After htmx swaps a page in, put focus where a screen reader user expects it: on the error
  // summary if there is one, else on the main heading.
  document.addEventListener("htmx:afterSettle", function (event) {
    if (event.detail.target.id !== "main") return;
    var target = document.querySelector("[data-error-summary]") || document.querySelector("#main h1") || document.getElementById("main");
    if (target) {
      if (!target.hasAttribute("tabindex")) target.setAttribute("tabindex", "-1");
      target.focus();
      window.scrollTo(0, 0);
    }
  });

  // One press submits once: a second press while the first is on its way does nothing.
  document.addEventListener("submit", function (event) {
    var button = event.target.querySelector("[data-submit-once]");
    if (!button) return;
    if (button.dataset.sent) { event.preventDefault(); return; }
    button.dataset.sent = "1";
  }, true);

  // "Listen" plays the page's spoken prompt here instead of opening the recording as a page.
  var playing = null;
  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("[data-listen]");
    if (!link) return;
    event.preventDefault();
    if (playing) playing.pause();
    playing = new Audio(link.getAttribute("href"));
    playing.play().catch(function () { /* no sound device: nothing to do */ });
  });

  // A page brought back from the back-forward cache may show the last citizen's answers: fetch it again
  // (the server answers with nothing personal once the session has ended).
  window.addEventListener("pageshow", function (event) {
    if (event.persisted) window.location.reload();
  });

  // The header's links that come back to this page ("Chữ lớn", "English") carry next=. htmx swaps only
  // <main>, so the header keeps the next= of the first page loaded: point it at the page shown now.
  function keepPlace() {
    var here = window.location.pathname + window.location.search;
    document.querySelectorAll(".site-header a[href*='next=']").forEach(function (link) {
      var url = new URL(link.getAttribute("href"), window.location.href);
      url.searchParams.set("next", here);
      link.setAttribute("href", url.pathname + url.search);
    });
  }
  ["htmx:pushedIntoHistory", "htmx:replacedInHistory", "htmx:historyRestore", "htmx:afterSettle"].forEach(function (name) {
    document.addEventListener(name, keepPlace);
  });
  window.addEventListener("popstate", keepPlace);
  // And at the moment of the press, whatever happened since (the address bar is the truth).
  document.addEventListener("click", function (event) {
    if (event.target.closest && event.target.closest(".site-header a[href*='next=']")) keepPlace();
  }, true);

  // Inactivity: after idle-seconds without a touch or key, a warning counts down warning-seconds;
  // "I am still here" starts over, running out ends the session like the "finish" button.
  var dialog = document.getElementById("idle-warning");
  var endForm = document.getElementById("end-session");
  var idleSeconds = parseInt(body.dataset.idleSeconds, 10);
  var warningSeconds = parseInt(body.dataset.warningSeconds, 10);
  if (!dialog || !endForm || !(idleSeconds > 0) || !(warningSeconds > 0)) return;
  var countdown = dialog.querySelector("[data-idle-countdown]");
  var idleTimer = null, tickTimer = null, remaining = 0;

  function endSession() {
    window.clearTimeout(idleTimer);
    window.clearInterval(tickTimer);
    try { window.localStorage.clear(); window.sessionStorage.clear(); } catch (e) { /* storage off */ }
    endForm.submit();
  }
  function tick() {
    remaining -= 1;
    countdown.textContent = String(Math.max(remaining, 0));
    if (remaining <= 0) endSession();
  }
  function warn() {
    remaining = warningSeconds;
    countdown.textContent = String(remaining);
    if (typeof dialog.showModal === "function") dialog.showModal(); else dialog.setAttribute("open", "");
    dialog.querySelector("[data-idle-continue]").focus();
    tickTimer = window.setInterval(tick, 1000);
  }
  function restart() {
    window.clearTimeout(idleTimer);
    window.clearInterval(tickTimer);
    if (dialog.open) dialog.close();
    idleTimer = window.setTimeout(warn, idleSeconds * 1000);
  }
  ["pointerdown", "keydown", "input", "wheel"].forEach(function (name) {
    document.addEventListener(name, function () { if (!dialog.open) restart(); }, { passive: true, capture: true });
  });
  dialog.querySelector("[data-idle-continue]").addEventListener("click", function () {
    restart();
    // Tell the server too, so its own idle limit starts over.
    if (window.htmx) window.htmx.ajax("GET", window.location.pathname + window.location.search, { target: "#main", swap: "none" });
  });
  dialog.addEventListener("cancel", function (event) { event.preventDefault(); restart(); });
  restart();
})();
