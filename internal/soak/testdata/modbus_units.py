#!/usr/bin/python3
"""A Modbus TCP server with several units for ferry's soak (internal/soak).

It runs on Debian's pymodbus 3.0 (apt-get install python3-pymodbus; run it
with /usr/bin/python3). Each unit 1..UNITS serves holding registers:

  0     the unit id (never changes: a quiet value)
  1     a counter, +1 every second (a slow value)
  2-3   float32 20.5 + unit, high word first (quiet)

It listens on 127.0.0.1:PORT (0: any free port), prints "READY <port>"
once it listens, and runs until it is killed.

Usage: modbus_units.py PORT UNITS
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


async def main(port, units):
    slaves = {}
    for u in range(1, units + 1):
        hr = [0] * 16
        hr[0] = u
        hr[2:4] = list(struct.unpack(">2H", struct.pack(">f", 20.5 + u)))
        slaves[u] = ModbusSlaveContext(hr=ModbusSequentialDataBlock(0, hr), zero_mode=True)
    context = ModbusServerContext(slaves=slaves, single=False)
    server = ModbusTcpServer(context, address=("127.0.0.1", port), allow_reuse_address=True)
    serving = asyncio.create_task(server.serve_forever())
    await server.serving
    bound = server.server.sockets[0].getsockname()[1]
    print("READY %d" % bound, flush=True)
    count = 0
    while not serving.done():
        await asyncio.sleep(1)
        count = (count + 1) & 0xFFFF
        for s in slaves.values():
            s.setValues(3, 1, [count])
    await serving


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
