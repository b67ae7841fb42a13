// MathJax for pymdownx.arithmatex (generic mode): \( \) inline, \[ \] and $$ $$ display.
// MathJax itself is the copy the site ships (javascripts/vendor/mathjax/, see
// docs/_hooks/offline_math.py), with every TeX extension built in: nothing is loaded later.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
  svg: {
    fontCache: "global",
  },
};

document$.subscribe(() => {
  MathJax.startup.output.clearCache();
  MathJax.typesetClear();
  MathJax.texReset();
  MathJax.typesetPromise();
});
