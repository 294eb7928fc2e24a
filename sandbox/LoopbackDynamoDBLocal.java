// Starts AWS's DynamoDB Local bound to 127.0.0.1 on a port the OS chooses. Used by sandbox/aws.py.
//
// DynamoDB Local has no bind-address option: its Jetty server listens on every interface. This
// launcher builds the server exactly as DynamoDBLocal.jar's own main does, then, before starting
// it, moves Jetty's connector to 127.0.0.1 and port 0. Once listening it writes the port to a file
// (written whole, then renamed, so a reader never sees half of it), and it exits as soon as its
// standard input closes, so it cannot outlive the process that started it, even one killed hard.
//
// Run as a single-file source program (needs a JDK 17+, whose java compiles it in memory):
//   java -Djava.library.path=LIB -cp 'DynamoDBLocal.jar:LIB/*' LoopbackDynamoDBLocal.java PORT_FILE ARGS...
// where ARGS are DynamoDB Local's own (-inMemory -sharedDb ...; any -port is replaced).

import java.lang.reflect.Field;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Arrays;
import org.eclipse.jetty.server.Connector;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import software.amazon.dynamodb.services.local.main.ServerRunner;
import software.amazon.dynamodb.services.local.server.DynamoDBProxyServer;

public class LoopbackDynamoDBLocal {
    public static void main(String[] args) {
        if (args.length < 1) {
            System.err.println("usage: LoopbackDynamoDBLocal PORT_FILE [DynamoDB Local options]");
            System.exit(2);
        }
        try {
            serveUntilStdinCloses(args);
            System.exit(0);
        } catch (Throwable failure) {
            // Jetty's threads would keep a failed JVM alive: exit so the parent sees the failure at once
            failure.printStackTrace();
            System.exit(1);
        }
    }

    private static void serveUntilStdinCloses(String[] args) throws Exception {
        Path portFile = Path.of(args[0]);
        DynamoDBProxyServer proxy = ServerRunner.createServerFromCommandLineArgs(Arrays.copyOfRange(args, 1, args.length));
        ServerConnector connector = onlyConnector(jettyServerOf(proxy));
        connector.setHost("127.0.0.1");
        connector.setPort(0);
        proxy.start();
        if (connector.getLocalPort() <= 0) {
            throw new IllegalStateException("DynamoDB Local did not start listening (see the lines above)");
        }

        Path partial = portFile.resolveSibling(portFile.getFileName() + ".partial");
        Files.writeString(partial, Integer.toString(connector.getLocalPort()), StandardCharsets.US_ASCII);
        Files.move(partial, portFile, StandardCopyOption.ATOMIC_MOVE);

        while (System.in.read() != -1) {
            // nothing is ever sent; end of input means the parent has gone
        }
    }

    // The Jetty server is a private field of DynamoDBProxyServer; found by type, not by name, so a
    // renamed field in a newer DynamoDB Local does not break this.
    private static Server jettyServerOf(DynamoDBProxyServer proxy) throws IllegalAccessException {
        for (Field field : DynamoDBProxyServer.class.getDeclaredFields()) {
            if (Server.class.isAssignableFrom(field.getType())) {
                field.setAccessible(true);
                return (Server) field.get(proxy);
            }
        }
        throw new IllegalStateException("this DynamoDB Local has no Jetty Server field; the launcher needs updating");
    }

    private static ServerConnector onlyConnector(Server server) {
        Connector[] connectors = server.getConnectors();
        if (connectors.length != 1 || !(connectors[0] instanceof ServerConnector)) {
            throw new IllegalStateException("expected one Jetty ServerConnector, found " + Arrays.toString(connectors));
        }
        return (ServerConnector) connectors[0];
    }
}
