// The console's one script (served from /console/assets/console.js; the CSP allows no
// inline script). Progressive enhancement only: every page and form works without it.
// A form marked data-confirm asks before it is sent; the server still requires its own
// confirmation field where an action cannot be undone.
document.addEventListener("submit", function (e) {
  var form = e.target;
  var question = form && form.getAttribute && form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    e.preventDefault();
  }
});
