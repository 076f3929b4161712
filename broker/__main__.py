"""`python -m broker`: run a local Mosquitto with the fleet's generated passwords and ACLs.

`python -m broker --revoke pi-04` (with the same settings) withdraws a node's password: the running broker
drops its session at once and refuses it from then on, across restarts.
"""

import signal
import sys

from broker.errors import BusError
from broker.launcher import BrokerConfig, LocalBroker
from runtime.roles import command_line_error, configure_logging, settings_parser
from runtime.settings import ConfigError, load


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = settings_parser("python -m broker", __doc__, "broker")
    parser.add_argument("--revoke", metavar="USER", help="withdraw USER's password (the running broker drops it now)")
    args = parser.parse_args(argv)
    configure_logging("broker")
    try:
        config = load(BrokerConfig, args.config, overrides=args.set, section="broker")
        if args.revoke:
            LocalBroker(config).revoke(args.revoke)
            return 0
        broker = LocalBroker(config).start()
    except (ConfigError, BusError) as error:
        return command_line_error(error)
    signal.signal(signal.SIGTERM, _interrupt)  # stop in the main thread, not inside the handler
    try:
        return broker.process.wait() if broker.process else 1
    except KeyboardInterrupt:
        broker.stop()
        return 0


if __name__ == "__main__":
    sys.exit(main())
