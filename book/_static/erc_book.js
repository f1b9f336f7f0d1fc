// ERC Book: a table (a cell's output or a page's table) wider than its place on the page becomes a stack of cards,
// one per row, each cell labelled with its column's name (book/_static/erc_book.css); re-checked on resize.
(function () {
  function label(table) {
    var heads = table.querySelectorAll("thead tr");
    var rows = table.querySelectorAll("tbody tr");
    if (!heads.length || !rows.length) return;
    var width = rows[0].children.length, names = null;
    heads.forEach(function (tr) {   // the header row with one cell per column (pandas adds an index-name row)
      if (names === null && tr.children.length === width) {
        names = Array.prototype.map.call(tr.children, function (th) { return th.textContent.trim(); });
      }
    });
    if (!names) return;
    rows.forEach(function (tr) {
      Array.prototype.forEach.call(tr.children, function (cell, i) {
        if (cell.tagName === "TD" && names[i]) cell.setAttribute("data-label", names[i]);
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
  window.addEventListener("load", fit);
  window.addEventListener("resize", fit);
})();
