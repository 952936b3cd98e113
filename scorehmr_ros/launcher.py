"""
``scorehmr-launch``: run a launch description without ROS 2's ``launch`` package.

Usage: ``scorehmr-launch multicam cameras:=cam0,cam1 use_sim_time:=true`` (``--dry-run``
writes the commands instead of running them; ``--show-args`` lists the arguments). The
nodes run as child processes; Ctrl-C (SIGINT) or SIGTERM is passed on to them, and the
launcher exits with the first non-zero exit status of a child.
"""

import argparse
import logging
import shlex
import signal
import subprocess
import sys
import time
from typing import List, Optional

from scorehmr_ros import launch_description as ld

LOG = logging.getLogger('scorehmr-launch')


def parse(argv: Optional[List[str]] = None):
    """
    Parse ``DESCRIPTION [name:=value ...] [--dry-run] [--show-args]``.

    :param argv: arguments without the program name.
    :return: ``(options, {name: value})``.
    """
    parser = argparse.ArgumentParser(prog='scorehmr-launch', description=__doc__.split('\n')[1])
    parser.add_argument('description', choices=sorted(ld.DESCRIPTIONS))
    parser.add_argument('arguments', nargs='*', metavar='name:=value')
    parser.add_argument('--dry-run', action='store_true', help='show the commands only')
    parser.add_argument('--show-args', action='store_true', help='list launch arguments')
    options = parser.parse_args(argv)
    values = {}
    for item in options.arguments:
        name, sep, value = item.partition(':=')
        if not sep or not name:
            parser.error(f'expected name:=value, got {item!r}')
        values[name] = value
    return options, values


def main(argv: Optional[List[str]] = None) -> int:
    """Console entry point; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format='[scorehmr-launch] %(message)s')
    options, given = parse(argv)
    description = ld.DESCRIPTIONS[options.description]()
    if options.show_args:
        for arg in description.arguments:
            sys.stdout.write(f'{arg.name}:={arg.default!r}\n    {arg.description}\n')
        return 0
    try:
        values = ld.resolve_arguments(description, given)
    except ValueError as exc:
        LOG.error('%s', exc)
        return 2
    commands = [ld.command(ld.resolve_node(node, values)) for node in description.nodes
                if ld.enabled(node, values)]
    if options.dry_run:
        for argv_ in commands:
            sys.stdout.write(shlex.join(argv_) + '\n')
        return 0
    children = [subprocess.Popen(argv_) for argv_ in commands]
    LOG.info('started %d node(s): %s', len(children), ', '.join(str(c.pid) for c in children))

    def forward(signum, _frame):
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGINT)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    status = 0
    while any(child.poll() is None for child in children):
        for child in children:
            code = child.poll()
            if code not in (None, 0) and status == 0:
                status = code
                forward(signal.SIGINT, None)  # one node failed: stop the others
        time.sleep(0.1)
    for child in children:
        if child.returncode and status == 0:
            status = child.returncode
    return status


if __name__ == '__main__':
    sys.exit(main())
