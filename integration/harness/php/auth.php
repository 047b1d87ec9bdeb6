<?php
// The PHP seed's auth_http logic, written for the benchmark: the user's
// backend by the first letter of the user name, and Auth-Status: OK
// without checking the password, which is what imapgate replaces.
// BACKEND_IP (fastcgi_param) is where every backend name points.

function fail() {
    header("Auth-Status: Invalid login or password");
    exit;
}

if (!isset($_SERVER["HTTP_AUTH_USER"]) || !isset($_SERVER["HTTP_AUTH_PASS"])) {
    fail();
}
$username = $_SERVER["HTTP_AUTH_USER"];
$protocol = $_SERVER["HTTP_AUTH_PROTOCOL"] ?? "imap";

$ports = array("imap" => 143, "pop3" => 110, "smtp" => 25);
if (!isset($ports[$protocol])) {
    fail();
}
$backend_ip = array("mailhost01" => $_SERVER["BACKEND_IP"], "mailhost02" => $_SERVER["BACKEND_IP"]);
$server = in_array(substr($username, 0, 1), array("a", "c", "f", "g")) ? "mailhost01" : "mailhost02";

header("Auth-Status: OK");
header("Auth-Server: " . $backend_ip[$server]);
header("Auth-Port: " . $ports[$protocol]);
