module github.com/parleyhq/parley

go 1.26.0
