"""One run and what is done with it: preparing its data, its folder (lock, stash, resume), the
run itself, the catalog of runs, evaluation, prediction on the user's images, export and the
gradient check."""
