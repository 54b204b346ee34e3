// Sort a table by the column whose header is clicked (again: the other way). Cells with
// data-sort sort by that number (empty: always last), the others by their text.
(function () {
  function value(row, column) {
    var cell = row.cells[column];
    if (cell.hasAttribute("data-sort")) {
      var text = cell.getAttribute("data-sort");
      return text === "" ? null : parseFloat(text);
    }
    return cell.textContent.trim().toLowerCase();
  }
  function sortBy(table, column, header) {
    var ascending = header.getAttribute("aria-sort") !== "ascending";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = value(a, column), y = value(b, column);
      if (x === null || y === null) { return (x === null) - (y === null); }
      var order = typeof x === "number" ? x - y : x.localeCompare(y);
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      th.removeAttribute("aria-sort");
    });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, column) {
      th.addEventListener("click", function () { sortBy(table, column, th); });
      th.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          sortBy(table, column, th);
        }
      });
    });
  });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && location.hash.indexOf("#fig-") === 0) {
      location.hash = "figures";
    }
  });
})();
