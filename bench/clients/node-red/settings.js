// Node-RED settings for bench/run.py: a private runtime with no editor, no admin API,
// no credentials file and no telemetry, so only the flow under test runs. The port,
// user directory and flow file come from red.js's command line (-p, -u, the flow file);
// the flows read the broker port, topic, QoS and output file from environment
// variables (`${VAR}` node properties), set by run.py per row.
module.exports = {
    uiHost: "127.0.0.1",
    httpAdminRoot: false,
    credentialSecret: false,
    flowFilePretty: false,
    // Info level: run.py waits for "Connected to broker" before it sends load, since an
    // `mqtt out` node drops messages while it is not connected.
    logging: { console: { level: "info", metrics: false, audit: false } },
    diagnostics: { enabled: false, ui: false },
    runtimeState: { enabled: false, ui: false },
    telemetry: { enabled: false },
    externalModules: { autoInstall: false, palette: { allowInstall: false } },
    editorTheme: { projects: { enabled: false } },
    // Node-RED's default batch limit for http in bodies is 5 MB; a batch of 100 is ~11 kB.
    apiMaxLength: "5mb",
};
