// The desktop cashier follows its trade: once a phone has paid it, go on.
(function () {
  var status = document.getElementById("qr-status");
  if (!status) return;
  var t = status.getAttribute("data-t");
  function poll() {
    fetch("/cashier/status?t=" + encodeURIComponent(t), { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (s) {
        if (s.next) { window.location.assign(s.next); return; }
        setTimeout(poll, 2000);
      })
      .catch(function () { setTimeout(poll, 5000); });
  }
  setTimeout(poll, 2000);
})();
