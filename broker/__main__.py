"""`python -m broker`: run a local Mosquitto with the fleet's generated passwords and ACLs."""

import argparse
import signal
import sys

from broker.errors import BusError, ConfigError
from broker.launcher import BrokerConfig, LocalBroker
from broker.roles import configure_logging
from broker.settings import load


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m broker", description=__doc__)
    parser.add_argument("--config", help="TOML file; settings under [broker]")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    args = parser.parse_args(argv)
    configure_logging("broker")
    try:
        config = load(BrokerConfig, args.config, overrides=args.set, section="broker")
        broker = LocalBroker(config).start()
    except (ConfigError, BusError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)  # stop in the main thread, not inside the handler
    try:
        return broker.process.wait() if broker.process else 1
    except KeyboardInterrupt:
        broker.stop()
        return 0


if __name__ == "__main__":
    sys.exit(main())
