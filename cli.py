import sys

try:
    from nas_meta.cli import main
except KeyboardInterrupt:  # Ctrl-C while the libraries load: nothing has started
    sys.stderr.write("\nnas-meta: interrupted\n")
    raise SystemExit(130) from None

raise SystemExit(main())
