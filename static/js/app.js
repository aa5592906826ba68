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

  /* Stacked tables on narrow screens: each cell is labelled with its column's header. */
  function labelCells(root) {
    var tables = (root || document).querySelectorAll("table.stack");
    Array.prototype.forEach.call(tables, function (table) {
      var heads = table.querySelectorAll("thead th");
      if (!heads.length) { return; }
      var names = Array.prototype.map.call(heads, function (th) { return th.textContent.trim(); });
      Array.prototype.forEach.call(table.querySelectorAll("tbody tr"), function (row) {
        Array.prototype.forEach.call(row.children, function (cell, i) {
          if (cell.tagName === "TD" && !cell.hasAttribute("data-label") && names[i] && cell.colSpan === 1) {
            cell.setAttribute("data-label", names[i]);
          }
        });
      });
    });
  }

  /* Program forms: "Daily dose" belongs to continuous mode, the steps to flex mode. */
  function showModeFields(form) {
    if (!form) { return; }
    var checked = form.querySelector("input[type=radio][name$='mode']:checked");
    var mode = checked ? checked.value : "continuous";
    Array.prototype.forEach.call(form.querySelectorAll("[data-mode-field]"), function (field) {
      field.hidden = field.getAttribute("data-mode-field") !== mode;
    });
  }

  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target && target.name === "changes_program") {
      var section = document.getElementById("program-section");
      if (section && target.checked) { section.open = true; }
    }
    if (target && target.type === "radio" && /mode$/.test(target.name)) {
      showModeFields(target.form);
    }
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-print]");
    if (button) { event.preventDefault(); window.print(); }
  });

  /* Live pages poll every 30 seconds; a poll is skipped while someone is using a form
     inside the refreshed part (an acknowledgement being typed), so nothing is lost. */
  function busy(element) {
    var active = document.activeElement;
    if (active && element.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName)) { return true; }
    var fields = element.querySelectorAll("textarea, input[type=text]");
    for (var i = 0; i < fields.length; i++) { if (fields[i].value) { return true; } }
    var open = element.querySelectorAll("details[open]");
    for (var j = 0; j < open.length; j++) { if (open[j].querySelector("form")) { return true; } }
    return false;
  }

  var openDetails = null;
  document.addEventListener("htmx:beforeRequest", function (event) {
    var element = event.detail.elt;
    if (element && element.hasAttribute && element.hasAttribute("data-poll") && element === event.detail.target) {
      if (busy(element)) { event.preventDefault(); return; }
      openDetails = Array.prototype.map.call(element.querySelectorAll("details[open]"), function (d, i) {
        return d.id || ("#" + i);
      });
    }
  });

  document.addEventListener("htmx:afterSwap", function (event) {
    openProgramWhenNeeded(event.target);
    labelCells(event.target.parentNode || document);
    if (openDetails && openDetails.length) {
      var all = document.querySelectorAll("[data-poll] details");
      Array.prototype.forEach.call(all, function (d, i) {
        if (openDetails.indexOf(d.id || ("#" + i)) !== -1) { d.open = true; }
      });
    }
    openDetails = null;
  });

  document.addEventListener("DOMContentLoaded", function () {
    openProgramWhenNeeded(document);
    labelCells(document);
    Array.prototype.forEach.call(document.querySelectorAll("form"), function (form) {
      if (form.querySelector("[data-mode-field]")) { showModeFields(form); }
    });
  });
})();
