import sys

from r3e_testbed.services.event_bridge.app import main

sys.exit(main())
