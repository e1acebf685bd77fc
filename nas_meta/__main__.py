from nas_meta.cli import main

raise SystemExit(main())
