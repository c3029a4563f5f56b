"""A small Ansible project of the testbed's layout (playbooks/, roles/, ansible.cfg) whose
playbooks run for real on this machine: two inventory hosts, both ``localhost`` over the local
connection, so a run has per-host results without any remote host."""

from __future__ import annotations

import textwrap
from pathlib import Path

PLAYBOOK = """\
---
- name: Converge the demo hosts
  hosts: all
  gather_facts: false
  roles:
    - role: demo
  tasks:
    - name: Take a while
      ansible.builtin.command: sleep 2
      changed_when: false
      when: inventory_hostname == 'alpha'

    - name: Skip everywhere
      ansible.builtin.debug:
        msg: never shown
      when: false

    - name: Fail but carry on
      ansible.builtin.command: "false"
      changed_when: false
      ignore_errors: true
      when: inventory_hostname == 'alpha'

    - name: Fail on purpose
      ansible.builtin.fail:
        msg: "broke on {{ inventory_hostname }}"
      when: inventory_hostname in (fail_on | default([]))

    - name: Write the extra variable
      ansible.builtin.copy:
        dest: "{{ out_dir }}/{{ inventory_hostname }}.txt"
        content: "{{ greeting | default('none') }}"
        mode: "0600"
      when: out_dir is defined
"""

ROLE_TASKS = """\
---
- name: Loop over items
  ansible.builtin.command: "echo {{ item }}"
  loop: [one, two]
  changed_when: inventory_hostname == 'beta' and item == 'two' and not (quiet | default(false))
  notify: Say hello
"""

ROLE_HANDLERS = """\
---
- name: Say hello
  ansible.builtin.command: echo hello
  changed_when: true
"""

INVENTORY = """\
all:
  hosts:
    alpha: {}
    beta: {}
  vars:
    ansible_connection: local
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
"""


def make_project(root: Path) -> Path:
    """The project under ``root``; returns its playbooks folder. The role is found only through
    the project's ansible.cfg (roles_path), as the testbed's playbooks find theirs."""
    files = {
        "ansible.cfg": "[defaults]\nroles_path = roles\nretry_files_enabled = false\n",
        "playbooks/demo.yml": PLAYBOOK,
        "playbooks/broken.yml": "---\n- name: Not a play\n  hosts: all\n  taks: []\n",
        # What marks a folder as the project's playbooks.
        "playbooks/endpoints.yml": "---\n[]\n",
        "playbooks/fault.yml": "---\n[]\n",
        "roles/demo/tasks/main.yml": ROLE_TASKS,
        "roles/demo/handlers/main.yml": ROLE_HANDLERS,
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root / "playbooks"


def make_inventory(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "hosts.yml"
    path.write_text(INVENTORY, encoding="utf-8")
    return path
