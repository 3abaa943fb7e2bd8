// Draws every server-built figure: an element's data-figure holds Plotly JSON ({data, layout}).
(function () {
  "use strict";
  const config = { displayModeBar: false, responsive: true };
  document.querySelectorAll("[data-figure]").forEach((el) => {
    const fig = JSON.parse(el.dataset.figure);
    Plotly.newPlot(el, fig.data || [], fig.layout || {}, config).then(() => {
      const points = (fig.data || []).reduce((n, t) => n + ((t.x || t.y || []).length || 0), 0);
      el.dataset.points = String(points);
    });
  });
})();
