"""The Manager's migration revisions (a package so that installs ship them)."""
