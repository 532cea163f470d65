package io.camundarelay.engine;

import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;

/**
 * The Camunda 7 engine with its REST API at {@code /engine-rest} and the webapps
 * (Cockpit, Tasklist, Admin). Process models under {@code processes/} are deployed at start;
 * unchanged models are not redeployed.
 *
 * <p>Before anything starts, {@link TlsSettings} turns the {@code CAMUNDA_TLS_*} settings into
 * Spring's {@code server.ssl.*} and {@link StartupCheck} refuses unsafe settings (one line on
 * stderr, exit code 2).
 */
@SpringBootApplication
public class EngineApplication {

  public static void main(String[] args) {
    SpringApplication application = new SpringApplication(EngineApplication.class);
    application.addListeners(new TlsSettings(), new StartupCheck());
    application.run(args);
  }
}
