# Start-up shared by benches/compare.sh and benches/instructions.sh; sourced
# from the repository root. Builds the gateway, makes a work directory that
# is removed (and every background job stopped) on exit, and copies the
# demo users' keys there.

cargo build --release -q
bin=$PWD/target/release/chime-gateway
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
# port -> a free TCP port on 127.0.0.1
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sed -n '/^\[\[user\]\]/,$p' config/demo-keys.toml > "$work/keys.toml"
chmod 600 "$work/keys.toml"

# gateway_config NAME UPSTREAM-PORT PORT ADMIN-PORT on|off -> the gateway's
# config (benches/compare/gateway.toml filled in; "off": coalescing and the
# cache off), to be written into $work next to keys.toml.
gateway_config() {
  sed -e "s#__UPSTREAM__#127.0.0.1:$2#" -e "s#__PORT__#$3#" -e "s#__ADMIN__#$4#" -e "s#__NAME__#$1#" \
    benches/compare/gateway.toml
  [ "$5" = on ] || printf '[cache]\nenabled = false\ncoalesce = false\n'
}
