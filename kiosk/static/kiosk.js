// Progressive enhancement only: every page works without this file.
(function () {
  "use strict";
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
})();
