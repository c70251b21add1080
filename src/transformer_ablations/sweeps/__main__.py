from .command import dispatch

raise SystemExit(dispatch())
