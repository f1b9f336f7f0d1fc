// ERC Book, for readers on any screen:
// 1. A table (a cell's output or a page's table) wider than its place on the page becomes a stack of cards, one
//    per row, each cell labelled with its column's name (book/_static/erc_book.css); re-checked on resize.
// 2. A figure shown much smaller than on a desktop (on a phone) enlarges to its desktop width when tapped, in a
//    layer that scrolls both ways; a tap, the close button or Escape closes it.
(function () {
  function label(table) {
    var heads = table.querySelectorAll("thead tr");
    var rows = table.querySelectorAll("tbody tr");
    if (!heads.length || !rows.length) return;
    var width = 0, names = null;
    rows.forEach(function (tr) { width = Math.max(width, tr.children.length); });
    var text = function (th) { return th.textContent.trim(); };
    heads.forEach(function (tr) {   // the header row with one cell per column; pandas adds an index-name row
      if (tr.children.length !== width) return;
      if (names === null) { names = Array.prototype.map.call(tr.children, text); return; }
      Array.prototype.forEach.call(tr.children, function (th, i) {   // index names fill the blank corner
        if (!names[i] && text(th)) names[i] = text(th);
      });
    });
    if (!names) return;
    rows.forEach(function (tr) {
      // a row of a MultiIndex group lacks the outer index cells (rowspan): its cells are the rightmost columns
      var offset = width - tr.children.length;
      Array.prototype.forEach.call(tr.children, function (cell, i) {
        if (names[i + offset]) cell.setAttribute("data-label", names[i + offset]);
      });
    });
  }
  function fit() {
    document.querySelectorAll(".bd-article table, .cell_output table").forEach(function (table) {
      table.classList.remove("erc-stacked");
      var box = table.parentElement;
      if (table.scrollWidth > box.clientWidth + 1) { label(table); table.classList.add("erc-stacked"); }
    });
  }

  var DESKTOP_PX = 672;   // the content column of a desktop page (erc_core.book.style.DISPLAY_WIDTH_PX)
  function zoomWidth(img) { return Math.min(DESKTOP_PX, img.naturalWidth); }
  function zoomable(img) {   // a figure (not an icon) shown at under 3/4 of its desktop width
    return img.naturalWidth >= 400 && img.getBoundingClientRect().width < 0.75 * zoomWidth(img);
  }
  function mark() {
    // the chapters' figures (a slider's figures, drawn later by the widget manager, enlarge too, without a hint)
    document.querySelectorAll(".bd-article img").forEach(function (img) {
      if (img.closest(".widget-html")) return;
      var on = img.complete && zoomable(img);
      img.classList.toggle("erc-zoomable", on);
      var hint = img.nextElementSibling;
      if (on && !(hint && hint.classList.contains("erc-zoom-hint"))) {
        hint = document.createElement("span");
        hint.className = "erc-zoom-hint";
        hint.textContent = "tap the figure to enlarge it";
        img.insertAdjacentElement("afterend", hint);
      }
    });
  }
  function open(img) {
    var layer = document.createElement("div");
    layer.className = "erc-zoom";
    layer.setAttribute("role", "dialog");
    layer.setAttribute("aria-label", "enlarged figure (tap to close)");
    var big = document.createElement("img");
    big.src = img.currentSrc || img.src;
    big.alt = img.alt;
    big.style.width = zoomWidth(img) + "px";
    var close = document.createElement("button");
    close.type = "button";
    close.className = "erc-zoom-close";
    close.setAttribute("aria-label", "close the enlarged figure");
    close.textContent = "\u00d7";
    layer.appendChild(close);
    layer.appendChild(big);
    document.body.appendChild(layer);
    function shut() { layer.remove(); document.removeEventListener("keydown", key); }
    function key(e) { if (e.key === "Escape") shut(); }
    layer.addEventListener("click", shut);
    document.addEventListener("keydown", key);
    close.focus();
  }
  // one listener for every figure, also those a slider shows later (the widget manager draws them after load)
  document.addEventListener("click", function (e) {
    var img = e.target;
    if (img.tagName === "IMG" && img.closest(".bd-article") && !img.closest("a") && zoomable(img)) {
      e.preventDefault();
      open(img);
    }
  });
  window.addEventListener("load", function () { fit(); mark(); });
  window.addEventListener("resize", function () { fit(); mark(); });
})();
