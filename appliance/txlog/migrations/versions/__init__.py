"""The transaction log's migration revisions (a package so that installs ship them)."""
