from rtmbotd.cli import main

raise SystemExit(main())
