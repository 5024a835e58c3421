"""Several runs planned together: ``train --setting all`` (the four reference settings), the runs
it finds already in their folders, and the summary it prints."""
