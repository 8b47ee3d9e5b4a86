from parrot.cli import main

raise SystemExit(main())
