#!/usr/bin/env python3
"""A generated feed's sites spread over a nation's: each row's facility ZIP, name, city, state
and machine replaced by one of 8,000 sites (400 plants, 20 machines each, a plant's ZIP, city
and state its own), picked at random a row, as a national mailer's feed names scans from every
plant. `imbtrack gen` writes 16 facilities and 7 machines (113 sites in a feed), which is what
the other benches measure; this one shows what thousands of sites cost.

    # the bench's own feed (10,063,078 records), kept in its --dir as bench-feed.psv
    imbtrack bench --pieces 2000000 --now 2025-02-01T00:00:00Z --dir /tmp/bd
    python3 benches/national-sites.py /tmp/bd/bench-feed.psv /tmp/feednat10m.psv
    imbtrack bench --pieces 2000000 --now 2025-02-01T00:00:00Z --feed /tmp/feednat10m.psv

Columns are found by the header's names, so any psv feed of `imbtrack gen` will do. Seeded: the
same input gives the same output.
"""

import random
import sys

PLANTS = 400
MACHINES_PER_PLANT = 20
STATES = ["FL", "GA", "TX", "CA", "NY", "IL", "OH", "PA", "WA", "AZ"]
MACHINES = ["DBCS", "CIOSS", "AFCS", "APPS", "SPBS", "FSS", "DIOSS", "LCTS", "AFSM", "USS"]


def sites():
    """(ZIP, name, city, state, machine) of each site, plant by plant."""
    for plant in range(PLANTS):
        for machine in range(MACHINES_PER_PLANT):
            yield (
                "%05d" % (10000 + plant * 211 % 89000),
                "PLANT %d P&DC" % plant,
                "CITY %d" % (plant * 7 % 311),
                STATES[plant % len(STATES)],
                "%s%d" % (MACHINES[machine % len(MACHINES)], machine // len(MACHINES)),
            )


def main(source, target):
    rng = random.Random(7)
    table = list(sites())
    with open(source) as rows, open(target, "w") as out:
        header = rows.readline()
        out.write(header)
        names = header.rstrip("\n").split("|")
        columns = [
            names.index(name)
            for name in (
                "scanFacilityZip",
                "scanFacilityName",
                "scanFacilityCity",
                "scanFacilityState",
                "machineName",
            )
        ]
        batch = []
        for row in rows:
            values = row.rstrip("\n").split("|")
            for column, value in zip(columns, table[rng.randrange(len(table))]):
                values[column] = value
            batch.append("|".join(values) + "\n")
            if len(batch) == 100_000:
                out.write("".join(batch))
                batch = []
        out.write("".join(batch))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: national-sites.py FEED.psv OUT.psv")
    main(sys.argv[1], sys.argv[2])
