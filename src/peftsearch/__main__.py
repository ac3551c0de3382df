from peftsearch.cli import main

raise SystemExit(main())
