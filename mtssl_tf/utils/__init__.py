"""Small helpers without package dependencies: progress lines, plots."""
