#!/usr/bin/env bash
# The release Job (deploy/release/release-job.yaml): for every category of CATEGORIES_FILE,
# package its run (signing key from a read-only Secret), evaluate it with signed attestations
# when REQUIRE names thresholds and the category has a test set, publish it (waiting for the
# registry lock while other publishers run) and promote it to CHANNEL (default staging).
# The provenance's builder id names this Job: VQAD_K8S_NAMESPACE, VQAD_K8S_JOB,
# VQAD_K8S_POD_UID and VQAD_IMAGE come from the pod (schemas/build-type-v1.md).
# A category that fails is reported and the others go on; the exit code is 1 if any failed.
#
#   CATEGORIES_FILE, RUNS_DIR, DATA_DIR, REGISTRY_DIR   lists and folders
#   RELEASE_VERSION                                     e.g. 1.4.0 (semver)
#   SIGNING_KEY, PUBKEY                                 the key pair (PEM files)
#   REQUIRE                                             e.g. "image_auroc>=0.9 pixel_auroc>=0.9" (optional)
#   CHANNEL, DIST_DIR                                   default staging, /tmp/dist
set -euo pipefail
: "${CATEGORIES_FILE:?}" "${RUNS_DIR:?}" "${REGISTRY_DIR:?}" "${RELEASE_VERSION:?}" "${SIGNING_KEY:?}" "${PUBKEY:?}"
channel="${CHANNEL:-staging}"
dist="${DIST_DIR:-/tmp/dist}"
mkdir -p "$dist"
failed=()
# Each step returns on failure explicitly: `set -e` does not apply inside a function called as
# a condition, and a failed step (a requirement not met: exit 6) must stop that category.
release() {
  local category="$1"
  local pkg="$dist/$category-$RELEASE_VERSION.vqad"
  vqad package "$RUNS_DIR/$category" --name "$category" --version "$RELEASE_VERSION" --key "$SIGNING_KEY" --out "$dist" || return 1
  local attest=()
  if [ -n "${REQUIRE:-}" ] && [ -d "${DATA_DIR:-/nonexistent}/$category/test" ]; then
    local req=()
    for r in $REQUIRE; do req+=(--require "$r"); done
    vqad eval "$pkg" --pubkey "$PUBKEY" "$DATA_DIR/$category" --out "$dist/eval-$category" --ep cpu --attest "$SIGNING_KEY" "${req[@]}" || return 1
    local d="$dist/eval-$category/attestations/$category"
    attest=(--attestation "$d/$category-$RELEASE_VERSION.test-result.intoto.json" --attestation "$d/$category-$RELEASE_VERSION.evaluation.intoto.json")
  fi
  vqad publish "$pkg" --registry "$REGISTRY_DIR" --pubkey "$PUBKEY" "${attest[@]}" || return 1
  vqad promote "$REGISTRY_DIR" "$category" "$RELEASE_VERSION" --channel "$channel" --key "$SIGNING_KEY" || return 1
}
while read -r category; do
  echo "release: $category $RELEASE_VERSION"
  if ! release "$category"; then
    echo "release: $category FAILED" >&2
    failed+=("$category")
  fi
done < <(grep -v '^[[:space:]]*#' "$CATEGORIES_FILE" | sed '/^[[:space:]]*$/d' | tr -d '[:blank:]')
if [ "${#failed[@]}" -gt 0 ]; then
  echo "release: failed: ${failed[*]}" >&2
  exit 1
fi
echo "release: every category published and promoted to $channel"
