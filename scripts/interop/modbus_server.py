#!/usr/bin/python3
"""A Modbus TCP server for ferry's interop test (cmd/ferry/interop_test.go).

It runs on pymodbus 3.0 (Debian: apt-get install python3-pymodbus; run it
with Debian's /usr/bin/python3) and serves known values, so that the test
can check what ferry reads from an implementation that is not its own:

  holding 0-1   float32 21.5, high word first (ABCD)
  holding 2-3   float32 21.5, low word first (CDAB)
  holding 4     int16 -1234
  holding 6-7   uint32 3000000000, high word first
  holding 10    uint16 counter, +1 every second from 0
  coil 0        true
  coil 1        false

Addresses are protocol addresses (zero_mode: register 0 is the first one
on the wire). It prints "READY <port>" once it listens and runs until it
is killed.

Usage: modbus_server.py PORT
"""

import asyncio
import logging
import struct
import sys

from pymodbus.datastore import (
    ModbusSequentialDataBlock,
    ModbusServerContext,
    ModbusSlaveContext,
)
from pymodbus.server.async_io import ModbusTcpServer

FLOAT = 21.5
INT16 = -1234
UINT32 = 3000000000
COUNTER = 10


def words(fmt, value):
    """Return the big-endian 16-bit registers of value packed as fmt."""
    raw = struct.pack(">" + fmt, value)
    return list(struct.unpack(">%dH" % (len(raw) // 2), raw))


async def main(port):
    hr = [0] * 32
    hi, lo = words("f", FLOAT)
    hr[0:2] = [hi, lo]
    hr[2:4] = [lo, hi]
    hr[4] = words("h", INT16)[0]
    hr[6:8] = words("I", UINT32)
    coils = [False] * 16
    coils[0] = True
    slave = ModbusSlaveContext(
        hr=ModbusSequentialDataBlock(0, hr),
        co=ModbusSequentialDataBlock(0, coils),
        zero_mode=True,
    )
    context = ModbusServerContext(slaves=slave, single=True)
    server = ModbusTcpServer(context, address=("127.0.0.1", port), allow_reuse_address=True)
    serving = asyncio.create_task(server.serve_forever())
    await server.serving
    print("READY %d" % port, flush=True)
    count = 0
    while not serving.done():
        await asyncio.sleep(1)
        count = (count + 1) & 0xFFFF
        slave.setValues(3, COUNTER, [count])
    await serving


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(main(int(sys.argv[1])))
