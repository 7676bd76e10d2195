// Progressive enhancement only: every page works without this script.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // Ask before an irreversible signature (reject, revoke, withdraw). A button can carry its
  // own question (data-confirm on the button: the form's other buttons do not ask).
  document.querySelectorAll("form").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      var button = event.submitter;
      var question = (button && button.dataset.confirm) || form.dataset.confirm;
      if (question && !window.confirm(question)) {
        event.preventDefault();
        return;
      }
      // No double submission of a signature while the HSM signs.
      if (button) {
        window.setTimeout(function () { button.disabled = true; }, 0);
      }
    });
  });
  // A secret shown once: select it on focus so it can be copied at once.
  document.querySelectorAll("input[data-copy]").forEach(function (input) {
    input.addEventListener("focus", function () { input.select(); });
  });
  // Show times in the reader's own zone next to UTC where a cell holds an ISO time.
  document.querySelectorAll("td[data-iso]").forEach(function (cell) {
    var moment = new Date(cell.dataset.iso);
    if (!isNaN(moment)) { cell.title = "your time: " + moment.toLocaleString(); }
  });
});
