/* Small progressive enhancements; every page works without them. No inline scripts
   anywhere (Content-Security-Policy: script-src 'self'). */
(function () {
  "use strict";

  function openProgramWhenNeeded(root) {
    var flag = (root || document).querySelector("[data-concentration-change='true']");
    var section = document.getElementById("program-section");
    if (flag && section && !section.open) {
      section.open = true;
    }
  }

  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target && target.name === "changes_program") {
      var section = document.getElementById("program-section");
      if (section && target.checked) { section.open = true; }
    }
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-print]");
    if (button) { event.preventDefault(); window.print(); }
  });

  document.addEventListener("htmx:afterSwap", function (event) {
    openProgramWhenNeeded(event.target);
  });
  document.addEventListener("DOMContentLoaded", function () { openProgramWhenNeeded(document); });
})();
