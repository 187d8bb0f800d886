"""After training: modularity analysis and expert-subset selection."""
