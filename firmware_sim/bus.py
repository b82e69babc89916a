"""A simulated RS-485 bus: a virtual null-modem cable between two pseudo-terminals.

::

    pymodbus RTU server ── /dev/pts/A ══ relay ══ /dev/pts/B ── {bus_dir}/{name}  (the edge opens this)
                          (slave A)  masters A,B   (slave B)

Two pty pairs; an asyncio loop (one thread per bus) copies bytes between their
master ends, exactly like ``socat`` or ``tty0tty``, and serves the Modbus RTU
server (pymodbus) on slave A. The edge opens the stable symlink to slave B as it
would open ``/dev/ttyUSB0``.

The relay paces bytes at the configured line rate (10 bits per character at
19200 baud: ~0.52 ms per byte, a full 125-register answer takes ~133 ms) so the
edge sees realistic bus timing; ``line_timing=False`` turns that off.

The client side may close and reopen its end at any time: while no process
holds slave B open the relay stops reading it (a master reads EIO then), polls
for the next open, and drops whatever the server answers in between, like a
device talking to a disconnected cable.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import random
import select
import threading
import time
import tty
from collections.abc import Callable, Sequence
from pathlib import Path

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from contracts.fieldbus import (
    DISPLAY_INFO_ADDRESS,
    DISPLAY_INFO_COUNT,
    FC_READ_HOLDING_REGISTERS,
    FC_READ_INPUT_REGISTERS,
    FC_WRITE_MULTIPLE_REGISTERS,
    FC_WRITE_SINGLE_REGISTER,
    HEADER_ADDRESS,
    HEADER_COUNT,
    TABLE_ADDRESS,
)
from firmware_sim.controllers import Controller, corrupt
from firmware_sim.count_display import CountDisplay

#: What may hang on a simulated bus: the sensor controllers (read, FC 04) and count displays (written).
BusDevice = Controller | CountDisplay

log = logging.getLogger(__name__)

_READ_SIZE = 4096
_REOPEN_POLL_S = 0.05
_BITS_PER_CHAR = 10  # start + 8 data + stop (8N1)


class BusError(Exception):
    """The bus could not be set up."""


async def _no_such_unit(
    func_code: int, start_address: int, address: int, count: int, registers: list[int], values: object
) -> ExcCodes | None:
    return ExcCodes.GATEWAY_NO_RESPONSE  # never sent: ``_trace_packet`` drops frames for unknown units


def _catch_all() -> SimDevice:
    """Device id 0 answers for any unit no controller has; its answers are dropped (silence on the wire)."""
    return SimDevice(
        id=0, simdata=[SimData(address=0, count=1, values=0, datatype=DataType.REGISTERS)], action=_no_such_unit
    )


def _sim_device(controller: Controller) -> SimDevice:
    """A pymodbus device whose input registers are read live from ``controller``."""

    async def action(
        func_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if func_code != FC_READ_INPUT_REGISTERS or values is not None:
            return ExcCodes.ILLEGAL_FUNCTION
        current = controller.read_input_registers(address, count)
        if current is None:
            return ExcCodes.ILLEGAL_ADDRESS
        offset = address - start_address
        registers[offset : offset + count] = current
        return None

    return SimDevice(
        id=controller.unit,
        simdata=[
            SimData(address=HEADER_ADDRESS, count=HEADER_COUNT, values=0, datatype=DataType.REGISTERS),
            SimData(address=TABLE_ADDRESS, count=controller.count, values=0, datatype=DataType.REGISTERS),
        ],
        action=action,
    )


def _display_device(display: CountDisplay) -> SimDevice:
    """A pymodbus device whose holding registers are the display's: FC 03 reads, FC 06/16 writes."""

    async def action(
        func_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if values is not None:
            if func_code not in (FC_WRITE_SINGLE_REGISTER, FC_WRITE_MULTIPLE_REGISTERS):
                return ExcCodes.ILLEGAL_FUNCTION
            refused = display.write_registers(address, [int(v) for v in values])
            return None if refused is None else ExcCodes(refused)
        # FC 06 reads its register back for the reply after writing it
        if func_code not in (FC_READ_HOLDING_REGISTERS, FC_WRITE_SINGLE_REGISTER):
            return ExcCodes.ILLEGAL_FUNCTION
        current = display.read_holding_registers(address, count)
        if current is None:
            return ExcCodes.ILLEGAL_ADDRESS
        offset = address - start_address
        registers[offset : offset + count] = current
        return None

    return SimDevice(
        id=display.unit,
        simdata=[
            SimData(address=0, count=DISPLAY_INFO_ADDRESS + DISPLAY_INFO_COUNT, values=0, datatype=DataType.REGISTERS)
        ],
        action=action,
    )


class SerialBus:
    """One simulated field bus with its controllers or displays; ``start()``/``stop()``; the edge opens ``.path``."""

    def __init__(
        self,
        name: str,
        path: Path,
        controllers: Sequence[BusDevice],
        *,
        baudrate: int = 19200,
        line_timing: bool = True,
        seed: int | None = None,
    ) -> None:
        if not controllers:
            raise ValueError(f"bus {name}: no controllers")
        units = [c.unit for c in controllers]
        if len(set(units)) != len(units):
            raise ValueError(f"bus {name}: duplicate unit ids {units}")
        self.name = name
        self.path = Path(path)
        self.controllers = {c.unit: c for c in controllers}
        self.baudrate = baudrate
        self.char_time = _BITS_PER_CHAR / baudrate if line_timing else 0.0
        self._rng = random.Random(seed)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._fds: list[int] = []
        self._server_master = -1
        self._client_master = -1
        self.server_tty = ""
        self.tty = ""
        self._client_open = False
        self._line_free_at = 0.0
        # counters (read without locking: ints, written only by the bus thread)
        self.frames_answered = 0
        self.frames_silenced = 0
        self.frames_corrupted = 0
        self.bytes_to_client = 0
        self.bytes_to_server = 0
        self.bytes_dropped = 0
        self.client_opens = 0
        self._answered_at: dict[int, float] = {}

    # -- lifecycle -------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            raise BusError(f"bus {self.name}: already started")
        self._open_ptys()
        self._link()
        self._thread = threading.Thread(target=self._run, name=f"bus-{self.name}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            self.stop()
            raise BusError(f"bus {self.name}: Modbus server did not start: {self._error or 'timeout'}")
        log.info("bus %s: %s -> %s (server on %s)", self.name, self.path, self.tty, self.server_tty)

    def stop(self, timeout: float = 10.0) -> None:
        loop, stopping, thread = self._loop, self._stopping, self._thread
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop already finished
                loop.call_soon_threadsafe(stopping.set)
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.error("bus %s: thread did not stop within %.0f s", self.name, timeout)
        self._thread = None
        self._unlink()
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def client_connected(self) -> bool:
        return self._client_open

    # -- ptys and link ----------------------------------------------------------
    def _open_ptys(self) -> None:
        server_master, server_slave = os.openpty()
        client_master, client_slave = os.openpty()
        self._fds = [server_master, server_slave, client_master]
        self._server_master, self._client_master = server_master, client_master
        self.server_tty = os.ttyname(server_slave)
        self.tty = os.ttyname(client_slave)
        # Raw mode from the start: no echo or line editing even before a client configures the port.
        tty.setraw(server_slave)
        tty.setraw(client_slave)
        # Slave A stays open here too, so its master never reads EIO while pymodbus (re)opens it.
        # Slave B is closed: its master then tells whether a client holds the port open.
        os.close(client_slave)
        os.set_blocking(server_master, False)
        os.set_blocking(client_master, False)

    def _link(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(self.tty)
        os.replace(tmp, self.path)

    def _unlink(self) -> None:
        try:
            if self.tty and os.readlink(self.path) == self.tty:
                self.path.unlink()
        except OSError:
            pass

    # -- the bus thread -----------------------------------------------------------
    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:  # a thread must log, not die silently
            self._error = exc
            log.exception("bus %s: stopped by an error", self.name)
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        server = ModbusSerialServer(
            [
                _catch_all(),
                *(
                    _display_device(c) if isinstance(c, CountDisplay) else _sim_device(c)
                    for c in self.controllers.values()
                ),
            ],
            port=self.server_tty,
            baudrate=self.baudrate,
            ignore_missing_devices=True,
            trace_packet=self._trace_packet,
        )
        await server.serve_forever(background=True)
        self._loop.add_reader(self._server_master, self._guard(self._from_server))
        self._watch_client()
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            self._loop.remove_reader(self._server_master)
            self._loop.remove_reader(self._client_master)
            await server.shutdown()  # type: ignore[no-untyped-call]

    def _guard(self, fn: Callable[[], None]) -> Callable[[], None]:
        def call() -> None:
            try:
                fn()
            except Exception:
                log.exception("bus %s: relay error", self.name)

        return call

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        """pymodbus hook on every frame: silent, switched-off or noisy controllers are applied here."""
        if not sending or not data:
            return data
        try:
            controller = self.controllers.get(data[0])
            if controller is None or not controller.answers:
                self.frames_silenced += 1
                return b""
            self.frames_answered += 1
            self._answered_at[data[0]] = time.monotonic()
            if controller.noise > 0 and self._rng.random() < controller.noise:
                self.frames_corrupted += 1
                return corrupt(data, self._rng)
        except Exception:
            log.exception("bus %s: trace hook failed", self.name)
        return data

    # -- relay -------------------------------------------------------------------
    def _deliver_at(self, nbytes: int) -> float:
        """Loop time at which ``nbytes`` sent now have crossed the (half-duplex) line."""
        assert self._loop is not None
        now = self._loop.time()
        self._line_free_at = max(now, self._line_free_at) + nbytes * self.char_time
        return self._line_free_at

    def _send(self, fd: int, data: bytes, to_client: bool) -> None:
        assert self._loop is not None
        if self.char_time <= 0:
            self._write(fd, data, to_client)
        else:
            self._loop.call_at(self._deliver_at(len(data)), self._guard(lambda: self._write(fd, data, to_client)))

    def _write(self, fd: int, data: bytes, to_client: bool) -> None:
        if to_client and not self._client_open:
            self.bytes_dropped += len(data)
            return
        try:
            n = os.write(fd, data)
        except OSError as exc:
            if exc.errno not in (errno.EIO, errno.EAGAIN, errno.EWOULDBLOCK):
                raise
            n = 0
        if n < len(data):
            self.bytes_dropped += len(data) - n
        if to_client:
            self.bytes_to_client += n
        else:
            self.bytes_to_server += n

    def _from_server(self) -> None:
        try:
            data = os.read(self._server_master, _READ_SIZE)
        except BlockingIOError:
            return
        if data:
            self._send(self._client_master, data, to_client=True)

    def _from_client(self) -> None:
        try:
            data = os.read(self._client_master, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            data = b""
        if not data:  # EIO: the last client closed slave B
            self._client_closed()
            return
        self._send(self._server_master, data, to_client=False)

    def _client_closed(self) -> None:
        assert self._loop is not None
        self._loop.remove_reader(self._client_master)
        self._client_open = False
        log.info("bus %s: client closed %s", self.name, self.path)
        self._loop.call_later(_REOPEN_POLL_S, self._guard(self._watch_client))

    def _watch_client(self) -> None:
        """Start relaying once a client holds slave B open (the master stops reporting hang-up)."""
        assert self._loop is not None and self._stopping is not None
        if self._stopping.is_set():
            return
        poller = select.poll()
        poller.register(self._client_master, select.POLLIN)
        events = poller.poll(0)
        if any(ev & select.POLLHUP for _, ev in events):
            self._loop.call_later(_REOPEN_POLL_S, self._guard(self._watch_client))
            return
        self._client_open = True
        self.client_opens += 1
        self._line_free_at = max(self._line_free_at, self._loop.time())
        log.info("bus %s: client opened %s", self.name, self.path)
        self._loop.add_reader(self._client_master, self._guard(self._from_client))

    def last_answer(self, unit: int) -> float | None:
        """``time.monotonic()`` when unit ``unit`` last sent an answer onto the line; None if never."""
        return self._answered_at.get(unit)

    def stats(self) -> dict[str, int | bool]:
        return {
            "client_connected": self._client_open,
            "client_opens": self.client_opens,
            "frames_answered": self.frames_answered,
            "frames_silenced": self.frames_silenced,
            "frames_corrupted": self.frames_corrupted,
            "bytes_to_client": self.bytes_to_client,
            "bytes_to_server": self.bytes_to_server,
            "bytes_dropped": self.bytes_dropped,
        }
