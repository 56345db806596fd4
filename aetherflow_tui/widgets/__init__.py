"""One module per pane or modal screen. Widgets render engine data; they never do I/O."""
