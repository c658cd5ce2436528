#!/usr/bin/env bash
# Installs the independent checkers of vqad's signed statements into a venv of their own in
# the set-up cache, once, and prints its python: PyPI's securesystemslib (verifies each DSSE
# envelope with the P-256 public key), in-toto-attestation (in-toto's protobuf bindings: parse
# a Statement, the SLSA v1 provenance and the test-result predicate, refusing unknown fields)
# and jsonschema (schemas/). tests/provenance.rs runs them; so can an auditor (README "Audit").
#
#   tools/setup-attest.sh            -> prints e.g. ~/.cache/vqad/venv-attest/bin/python
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/pyvenv.sh"
pyvenv_install attest "securesystemslib, in-toto-attestation and jsonschema" \
  --check '"$VENV/bin/python" -c "import securesystemslib.dsse, in_toto_attestation.predicates.provenance.v1.provenance_pb2, jsonschema"' \
  'securesystemslib[crypto]==1.6.0' 'in-toto-attestation==0.9.3' 'protobuf==7.36.2' 'jsonschema==4.26.0'
