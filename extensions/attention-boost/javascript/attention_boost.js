// Example extension script: marks the page so a test (or a curious user) can see extension JS is loaded.
document.documentElement.dataset.attentionBoost = "loaded";
