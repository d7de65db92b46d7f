"""A gateway run as its own process (`python -m gateway --config …`), so a test can
kill -9 it, or run two of them on one database, as production would."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import aiohttp

from gateway.config import GatewayConfig
from regtest.network import wait_until
from regtest.process import ManagedProcess, free_port

REPO = Path(__file__).resolve().parent.parent


def config_json(config: GatewayConfig) -> str:
    """The config as the gateway reads it (secrets written out, not masked)."""
    data = config.model_dump(mode="json", exclude_none=True)
    if config.operator_token is not None:
        data["operator_token"] = config.operator_token.get_secret_value()
    return json.dumps(data, indent=2)


class GatewayProcess:
    """One gateway process; `start()` waits until it answers, `kill()` is SIGKILL."""

    def __init__(self, config: GatewayConfig, name: str = "gateway") -> None:
        if config.port == 0:
            config = config.model_copy(update={"port": free_port()})
        self.config = config
        self.url = f"http://{config.host}:{config.port}"
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = config.data_dir / f"{name}.json"
        self.config_path.write_text(config_json(config))
        self.log_path = config.data_dir / f"{name}.log"
        # `python -m gateway --config …`, with this checkout's code first on the path.
        argv = [
            sys.executable,
            "-c",
            f"import sys; sys.path.insert(0, {str(REPO)!r}); "
            "from gateway.__main__ import main; sys.exit(main())",
            "--config",
            str(self.config_path),
        ]
        self.process = ManagedProcess(name, argv, self.log_path)

    async def start(self, timeout_s: float = 30) -> None:
        await self.process.start()

        async def healthy() -> bool:
            if not self.process.running():
                raise RuntimeError(f"gateway exited:\n{self.process.log_tail()}")
            async with aiohttp.ClientSession() as s, s.get(f"{self.url}/v1/health") as r:
                return r.status == 200

        await wait_until(f"{self.url} to answer", healthy, timeout_s, every_s=0.1)

    async def kill(self) -> None:
        await self.process.kill()

    async def stop(self) -> None:
        await self.process.stop()

    async def restart(self) -> None:
        await self.process.kill()
        await self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_log(self, text: str, timeout_s: float = 30) -> None:
        """Waits until the gateway's log says `text`."""

        async def said() -> bool:
            return text in self.log()

        await wait_until(f"{text!r} in {self.log_path}", said, timeout_s)
